//! The cluster keys of the broker config, with Kafka's names:
//! `process.roles`, `controller.quorum.voters`, `controller.listener.names`
//! and `listeners` (from which the controller listener's address is taken).
//! `node.id` stays in `BrokerConfig`.
//!
//! A node with no voters configured is a single node and runs no
//! controller; one with voters runs the Raft controller quorum.

/// Kafka's `process.roles` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Broker,
    Controller,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `process.roles`; `None`: not set (both, when voters are given).
    pub process_roles: Option<Vec<Role>>,
    /// `controller.quorum.voters`: `(node id, "host:port")`.
    pub voters: Vec<(u64, String)>,
    /// `controller.listener.names` (Kafka's default has none; Strom's
    /// `CONTROLLER` when unset).
    pub controller_listener_names: Vec<String>,
    /// `listeners`: `(name, "host:port")`.
    pub listeners: Vec<(String, String)>,
    /// `--controller-listen`: overrides the controller listener from `listeners`.
    pub controller_listen: Option<String>,
    /// `broker.session.timeout.ms`; `None`: Strom's default
    /// ([`BROKER_SESSION_TIMEOUT_MS_DEFAULT`]).
    pub broker_session_timeout_ms: Option<u64>,
    /// `controlled.shutdown.enable` (Kafka's, default true): on SIGTERM the
    /// broker asks the controller to move its leadership away first.
    pub controlled_shutdown_disabled: bool,
    /// `controlled.shutdown.max.wait.ms` (Strom's own; Kafka bounds the
    /// wait by its retries): how long a stopping broker waits for the
    /// controller to fence it before it stops anyway.
    pub controlled_shutdown_max_wait_ms: Option<u64>,
    /// `replica.lag.time.max.ms` (Kafka's, default 30000): a follower not
    /// caught up with its leader for this long leaves the ISR.
    pub replica_lag_time_max_ms: Option<u64>,
}

/// Kafka's `replica.lag.time.max.ms` default. A dead follower leaves the
/// ISR sooner, when the controller fences it (`broker.session.timeout.ms`);
/// this bounds a live one that cannot keep up.
pub const REPLICA_LAG_TIME_MAX_MS_DEFAULT: u64 = 30_000;

/// Strom's `broker.session.timeout.ms` default (Kafka's is 9000): the
/// failover goal is under 3 s from a broker's death to a new leader, and
/// the session is most of that. Brokers heartbeat every 500 ms, so 2500 ms
/// is five heartbeats missed in a row before a broker is fenced, which a
/// live broker on a loaded machine does not do; the controller then needs
/// a reconcile tick (200 ms) and one Raft commit to move leadership.
pub const BROKER_SESSION_TIMEOUT_MS_DEFAULT: u64 = 2500;
/// The shortest session accepted: the controller ticks every 100 ms and a
/// broker heartbeats every 500 ms, so a shorter one would fence live brokers.
const BROKER_SESSION_TIMEOUT_MS_MIN: u64 = 1000;

/// Strom's `controlled.shutdown.max.wait.ms` default: a controller that
/// is up fences a stopping broker within a heartbeat, a reconcile tick and
/// one Raft commit (well under a second); without a quorum nothing can
/// move, and a supervisor's stop must not wait for long.
pub const CONTROLLED_SHUTDOWN_MAX_WAIT_MS_DEFAULT: u64 = 5000;

/// The keys this module owns.
pub const CLUSTER_KEYS: &[&str] = &[
    "process.roles",
    "controller.quorum.voters",
    "controller.listener.names",
    "listeners",
    "broker.session.timeout.ms",
    "controlled.shutdown.enable",
    "controlled.shutdown.max.wait.ms",
    "replica.lag.time.max.ms",
];

const DEFAULT_CONTROLLER_LISTENER: &str = "CONTROLLER";

fn parse_ms(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "not a whole number of milliseconds".to_string())
}

impl ClusterConfig {
    /// Sets one of [`CLUSTER_KEYS`]; the error is the reason the value is bad.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "process.roles" => self.process_roles = Some(parse_roles(value)?),
            "controller.quorum.voters" => self.voters = parse_voters(value)?,
            "controller.listener.names" => {
                self.controller_listener_names = split_list(value).map(String::from).collect()
            }
            "listeners" => self.listeners = parse_listeners(value)?,
            "broker.session.timeout.ms" => {
                let ms = parse_ms(value)?;
                if ms < BROKER_SESSION_TIMEOUT_MS_MIN {
                    return Err(format!("at least {BROKER_SESSION_TIMEOUT_MS_MIN} ms"));
                }
                self.broker_session_timeout_ms = Some(ms);
            }
            "controlled.shutdown.enable" => {
                self.controlled_shutdown_disabled = match value.trim() {
                    "true" => false,
                    "false" => true,
                    _ => return Err("true or false".to_string()),
                }
            }
            "controlled.shutdown.max.wait.ms" => {
                let ms = parse_ms(value)?;
                self.controlled_shutdown_max_wait_ms = Some(ms);
            }
            "replica.lag.time.max.ms" => {
                let ms = parse_ms(value)?;
                if ms == 0 {
                    return Err("at least 1 ms".to_string());
                }
                self.replica_lag_time_max_ms = Some(ms);
            }
            _ => return Err(format!("`{key}` is not a cluster key")),
        }
        Ok(())
    }

    /// `broker.session.timeout.ms`, Strom's default when unset.
    pub fn broker_session_timeout_ms(&self) -> u64 {
        self.broker_session_timeout_ms
            .unwrap_or(BROKER_SESSION_TIMEOUT_MS_DEFAULT)
    }

    /// How long SIGTERM waits for the controller to fence this broker;
    /// `None` when `controlled.shutdown.enable=false`.
    pub fn controlled_shutdown_wait(&self) -> Option<std::time::Duration> {
        (!self.controlled_shutdown_disabled).then(|| {
            std::time::Duration::from_millis(
                self.controlled_shutdown_max_wait_ms
                    .unwrap_or(CONTROLLED_SHUTDOWN_MAX_WAIT_MS_DEFAULT),
            )
        })
    }

    /// `replica.lag.time.max.ms`, Kafka's default when unset.
    pub fn replica_lag_time_max(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.replica_lag_time_max_ms
                .unwrap_or(REPLICA_LAG_TIME_MAX_MS_DEFAULT),
        )
    }

    /// Whether this node is part of a quorum (voters are configured).
    pub fn enabled(&self) -> bool {
        !self.voters.is_empty()
    }

    fn controller_names(&self) -> Vec<&str> {
        if self.controller_listener_names.is_empty() {
            vec![DEFAULT_CONTROLLER_LISTENER]
        } else {
            self.controller_listener_names
                .iter()
                .map(String::as_str)
                .collect()
        }
    }

    /// The Kafka listener's address from `listeners` (the first one that is
    /// not a controller listener).
    pub fn broker_listener(&self) -> Option<&str> {
        let names = self.controller_names();
        self.listeners
            .iter()
            .find(|(name, _)| !names.contains(&name.as_str()))
            .map(|(_, addr)| addr.as_str())
    }

    /// Where this node's controller listens: `--controller-listen`, else
    /// the controller listener in `listeners`, else its own voter entry.
    pub fn controller_address(&self, node_id: i32) -> Option<String> {
        if let Some(addr) = &self.controller_listen {
            return Some(addr.clone());
        }
        let names = self.controller_names();
        if let Some((_, addr)) = self
            .listeners
            .iter()
            .find(|(name, _)| names.contains(&name.as_str()))
        {
            return Some(addr.clone());
        }
        let id = u64::try_from(node_id).ok()?;
        self.voters
            .iter()
            .find(|(v, _)| *v == id)
            .map(|(_, a)| a.clone())
    }

    /// `process.roles`, both roles when unset.
    pub fn roles(&self) -> Vec<Role> {
        self.process_roles
            .clone()
            .unwrap_or_else(|| vec![Role::Broker, Role::Controller])
    }

    /// Checks the cluster keys against each other and `node.id`.
    pub fn check(&self, node_id: i32) -> Result<(), String> {
        if !self.enabled() {
            if self.process_roles.is_some() {
                return Err("process.roles is set but controller.quorum.voters is empty".into());
            }
            return Ok(());
        }
        let roles = self.roles();
        if node_id < 1 {
            return Err(format!(
                "node.id {node_id}: a cluster node's id must be at least 1 (raft-rs reserves 0)"
            ));
        }
        let id = u64::try_from(node_id).unwrap_or(0);
        let voter = self.voters.iter().any(|(v, _)| *v == id);
        match (roles.contains(&Role::Broker), roles.contains(&Role::Controller)) {
            (true, true) | (false, true) if !voter => {
                return Err(format!(
                    "node.id {node_id} is a controller but not in controller.quorum.voters"
                ))
            }
            (true, true) => {}
            (false, true) => {
                return Err(format!(
                    "process.roles {roles:?}: controller-only nodes are not supported yet"
                ))
            }
            (true, false) if voter => {
                return Err(format!(
                    "node.id {node_id} is a broker only (process.roles=broker) but is listed in controller.quorum.voters"
                ))
            }
            (true, false) => {
                // A learner: the active controller sends it the metadata log
                // at its controller listener, which it names when it joins.
                if self.controller_address(node_id).is_none() {
                    return Err(
                        "a broker-only node needs a controller listener (--controller-listen or a CONTROLLER listener in listeners) where it receives the metadata log"
                            .into(),
                    );
                }
                return Ok(());
            }
            (false, false) => return Err("process.roles is empty".into()),
        }
        if self.controller_address(node_id).is_none() {
            return Err("no controller listener address".into());
        }
        Ok(())
    }
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_roles(value: &str) -> Result<Vec<Role>, String> {
    let mut roles = Vec::new();
    for r in split_list(value) {
        let role = match r {
            "broker" => Role::Broker,
            "controller" => Role::Controller,
            other => return Err(format!("unknown role `{other}` (broker, controller)")),
        };
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err("at least one role".into());
    }
    Ok(roles)
}

/// `1@host:port,2@host:port`: ids unique and positive.
pub fn parse_voters(value: &str) -> Result<Vec<(u64, String)>, String> {
    let mut voters: Vec<(u64, String)> = Vec::new();
    for v in split_list(value) {
        let Some((id, addr)) = v.split_once('@') else {
            return Err(format!("`{v}` is not ID@HOST:PORT"));
        };
        let id: u64 = id
            .parse()
            .map_err(|_| format!("`{id}` in `{v}` is not a node id"))?;
        if id == 0 {
            return Err(format!("`{v}`: node id 0 is reserved by raft-rs"));
        }
        check_host_port(addr).map_err(|e| format!("`{v}`: {e}"))?;
        if voters.iter().any(|(other, _)| *other == id) {
            return Err(format!("node id {id} is listed twice"));
        }
        voters.push((id, addr.to_string()));
    }
    if voters.is_empty() {
        return Err("no voters".into());
    }
    Ok(voters)
}

/// `NAME://host:port,...`.
fn parse_listeners(value: &str) -> Result<Vec<(String, String)>, String> {
    split_list(value)
        .map(|l| {
            let (name, addr) = l
                .split_once("://")
                .ok_or_else(|| format!("`{l}` is not NAME://HOST:PORT"))?;
            check_host_port(addr).map_err(|e| format!("`{l}`: {e}"))?;
            Ok((name.to_string(), addr.to_string()))
        })
        .collect()
}

fn check_host_port(addr: &str) -> Result<(), String> {
    let (_, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("`{addr}` has no port"))?;
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| format!("`{port}` is not a port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_bad_ones_are_named() {
        let v = parse_voters("1@127.0.0.1:9093, 2@localhost:9094").unwrap();
        assert_eq!(
            v,
            vec![(1, "127.0.0.1:9093".into()), (2, "localhost:9094".into())]
        );
        assert!(parse_voters("1@a:1,1@b:2").unwrap_err().contains("twice"));
        assert!(parse_voters("0@a:1").unwrap_err().contains("reserved"));
        assert!(parse_voters("x@a:1").is_err());
        assert!(parse_voters("1@a").unwrap_err().contains("no port"));
        assert!(parse_voters("").is_err());
    }

    #[test]
    fn listeners_give_both_addresses() {
        let mut c = ClusterConfig::default();
        c.set("controller.quorum.voters", "1@127.0.0.1:9093")
            .unwrap();
        c.set(
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9193",
        )
        .unwrap();
        assert_eq!(c.broker_listener(), Some("127.0.0.1:9092"));
        assert_eq!(c.controller_address(1).as_deref(), Some("127.0.0.1:9193"));
        c.set("controller.listener.names", "CTL").unwrap();
        // No CTL listener: the voter entry.
        assert_eq!(c.controller_address(1).as_deref(), Some("127.0.0.1:9093"));
        c.controller_listen = Some("0.0.0.0:7000".into());
        assert_eq!(c.controller_address(1).as_deref(), Some("0.0.0.0:7000"));
    }

    #[test]
    fn check_names_what_is_wrong() {
        let mut c = ClusterConfig::default();
        assert!(c.check(0).is_ok(), "a single node");
        c.set("process.roles", "broker,controller").unwrap();
        assert!(c.check(1).unwrap_err().contains("voters"));
        c.set("controller.quorum.voters", "1@h:1,2@h:2").unwrap();
        assert!(c.check(1).is_ok());
        assert!(c.check(3).unwrap_err().contains("not in"));
        assert!(c.check(0).unwrap_err().contains("at least 1"));
        c.set("process.roles", "broker").unwrap();
        assert!(c.check(1).unwrap_err().contains("listed in"));
        assert!(c.check(3).unwrap_err().contains("controller listener"));
        c.controller_listen = Some("127.0.0.1:9393".into());
        assert!(c.check(3).is_ok(), "a learner");
        c.set("process.roles", "controller").unwrap();
        assert!(c.check(1).unwrap_err().contains("not supported"));
        assert!(c.check(3).unwrap_err().contains("not in"));
        assert!(c.set("process.roles", "router").is_err());
    }
}
