//! `strom-bench engine`: placeholder until the engine lands.

#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    #[arg(long)]
    pub dir: std::path::PathBuf,
}

pub fn run(_args: EngineArgs) -> anyhow::Result<()> {
    anyhow::bail!("strom-bench engine: not implemented yet")
}
