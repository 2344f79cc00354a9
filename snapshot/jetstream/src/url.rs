//! How a user names a cluster (`nats://HOST:PORT[,HOST:PORT...]`) and a
//! record set in it (the same, then `/NAME`).
use std::str::FromStr;

/// Where a record set lives in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    /// Comma-separated `nats://HOST:PORT` of the servers to try.
    pub servers: String,
    pub name: String,
}

/// A cluster, without a record set (fleet workers serve every record set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// Comma-separated `nats://HOST:PORT` of the servers to try.
    pub servers: String,
}

/// `HOST:PORT[,HOST:PORT...]` as `nats://HOST:PORT,...`.
fn servers(hosts: &str, bad: &dyn Fn(&str) -> String) -> Result<String, String> {
    let servers: Vec<String> = hosts
        .split(',')
        .map(|h| {
            if h.is_empty() || !h.contains(':') {
                Err(bad("each server is HOST:PORT"))
            } else {
                Ok(format!("nats://{h}"))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(servers.join(","))
}

fn display_hosts(servers: &str) -> String {
    let hosts: Vec<&str> = servers
        .split(',')
        .map(|s| s.trim_start_matches("nats://"))
        .collect();
    hosts.join(",")
}

impl FromStr for RemoteUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("'{s}' is not a record set in a cluster ({why}): use nats://HOST:PORT[,HOST:PORT...]/NAME, e.g. nats://127.0.0.1:4222/lab")
        };
        let rest = s.strip_prefix("nats://").ok_or_else(|| bad("no nats://"))?;
        let (hosts, name) = rest.split_once('/').ok_or_else(|| bad("no /NAME"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("NAME must be letters, digits, - or _"));
        }
        Ok(RemoteUrl {
            servers: servers(hosts, &bad)?,
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nats://{}/{}", display_hosts(&self.servers), self.name)
    }
}

impl FromStr for ClusterUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("'{s}' is not a cluster ({why}): use nats://HOST:PORT[,HOST:PORT...], e.g. nats://127.0.0.1:4222")
        };
        let rest = s.strip_prefix("nats://").ok_or_else(|| bad("no nats://"))?;
        let hosts = rest.strip_suffix('/').unwrap_or(rest);
        if hosts.contains('/') {
            return Err(bad(
                "a worker serves every record set: give the servers only",
            ));
        }
        Ok(ClusterUrl {
            servers: servers(hosts, &bad)?,
        })
    }
}

impl std::fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nats://{}", display_hosts(&self.servers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_set_and_cluster_urls() {
        let r: RemoteUrl = "nats://a:1,b:2/lab".parse().unwrap();
        assert_eq!(r.servers, "nats://a:1,nats://b:2");
        assert_eq!(r.name, "lab");
        assert_eq!(r.to_string(), "nats://a:1,b:2/lab");
        for bad in [
            "127.0.0.1:4222/x",
            "nats://127.0.0.1:4222",
            "nats://127.0.0.1:4222/",
            "nats://host/x",
            "nats://h:1/a b",
            "nats://a:1/x.y",
        ] {
            assert!(bad.parse::<RemoteUrl>().is_err(), "{bad}");
        }

        let c: ClusterUrl = "nats://a:1,b:2".parse().unwrap();
        assert_eq!(c.servers, "nats://a:1,nats://b:2");
        assert_eq!(c.to_string(), "nats://a:1,b:2");
        assert_eq!(
            "nats://a:1/".parse::<ClusterUrl>().unwrap().servers,
            "nats://a:1"
        );
        let e = "nats://a:1/lab".parse::<ClusterUrl>().unwrap_err();
        assert!(e.contains("servers only"), "{e}");
        assert!("a:1".parse::<ClusterUrl>().is_err());
        assert!("nats://a".parse::<ClusterUrl>().is_err());
    }
}
