//! The in-memory mock broker of the integration tests as a program, for
//! trying `strom-bench run` by hand: prints its address and serves until
//! killed.

#[path = "../tests/common/mock_broker.rs"]
mod mock_broker;

fn main() {
    let broker = mock_broker::start();
    println!("{}", broker.addr);
    loop {
        std::thread::park();
    }
}
