//! `allowed_outbound_hosts`: which network destinations a component may reach.
//!
//! Entries are `scheme://host[:port]` after template expansion. As in Spin: `*` is a
//! wildcard for the scheme, the host or the port; `*.example.com` matches subdomains;
//! a missing port means the scheme's well-known port (6379 for `redis`); `a..b` is a
//! half-open port range. CIDR hosts, `self` and service chaining are not supported.

use anyhow::{bail, Context, Result};

#[derive(Debug)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

#[derive(Debug)]
struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug)]
enum HostPattern {
    Any,
    /// Stored with its leading dot: `.example.com`.
    Subdomain(String),
    Exact(String),
}

#[derive(Debug)]
enum PortPattern {
    Any,
    Exact(u16),
    Range(std::ops::Range<u16>),
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<Self> {
        let entry = entry.trim();
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("{entry:?} does not contain a scheme (e.g. 'redis://' or '*://')");
        };
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match port.split_once('/') {
            Some((_, path)) if !path.is_empty() => {
                bail!("{entry:?} has a path but is not allowed to")
            }
            Some((port, _)) => port,
            None => port,
        };
        let host = host.trim().trim_end_matches('/');

        let scheme = match scheme {
            "*" => None,
            s if s.chars().all(|c| c.is_ascii_alphabetic()) => Some(s.to_owned()),
            s => bail!("scheme {s:?} contains a non-alphabetic character"),
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.contains('*') {
                bail!("invalid allowed host {host:?}: wildcards are allowed only as prefixes");
            }
            HostPattern::Subdomain(format!(".{domain}"))
        } else if host.contains('*') {
            bail!("invalid allowed host {host:?}: wildcards are allowed only as subdomains");
        } else {
            HostPattern::Exact(host.to_owned())
        };
        let port = match port {
            "*" => PortPattern::Any,
            "" => {
                let scheme = scheme.as_deref().unwrap_or("*");
                PortPattern::Exact(well_known_port(scheme).with_context(|| {
                    format!("{entry:?}: no port given and scheme {scheme:?} has no well-known port")
                })?)
            }
            range if range.contains("..") => {
                let (start, end) = range.split_once("..").unwrap_or_default();
                let parse = |p: &str| {
                    p.parse::<u16>()
                        .with_context(|| format!("port range {range:?} contains a non-number"))
                };
                PortPattern::Range(parse(start)?..parse(end)?)
            }
            port => PortPattern::Exact(
                port.parse()
                    .with_context(|| format!("port {port:?} is not a number"))?,
            ),
        };
        Ok(Self { scheme, host, port })
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Subdomain(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Exact(h) => h == host,
        };
        let port_ok = match &self.port {
            PortPattern::Any => true,
            pattern => match port.or_else(|| well_known_port(scheme)) {
                Some(port) => match pattern {
                    PortPattern::Exact(p) => *p == port,
                    PortPattern::Range(range) => range.contains(&port),
                    PortPattern::Any => unreachable!("handled above"),
                },
                None => false,
            },
        };
        scheme_ok && host_ok && port_ok
    }
}

impl AllowedHosts {
    /// Parses already template-expanded entries.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        let entries = entries
            .iter()
            .map(|e| {
                AllowedHost::parse(e.as_ref()).with_context(|| {
                    format!("invalid allowed_outbound_hosts entry {:?}", e.as_ref())
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { entries })
    }

    /// Whether `url` may be reached; `default_scheme` applies to a URL written
    /// without one (`127.0.0.1:6379`), as in Spin.
    pub fn allows_url(&self, url: &str, default_scheme: &str) -> Result<bool> {
        let parsed = match url::Url::parse(url) {
            Ok(parsed) if parsed.has_host() => parsed,
            _ => url::Url::parse(&format!("{default_scheme}://{url}"))
                .with_context(|| format!("{url:?} is not a valid URL"))?,
        };
        let host = parsed
            .host_str()
            .with_context(|| format!("{url:?} has no host"))?;
        Ok(self
            .entries
            .iter()
            .any(|e| e.allows(parsed.scheme(), host, parsed.port())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entries: &[&str], url: &str) -> bool {
        AllowedHosts::parse(entries)
            .unwrap()
            .allows_url(url, "redis")
            .unwrap()
    }

    #[test]
    fn exact_host_and_port() {
        let hosts = ["redis://127.0.0.1:6379"];
        assert!(allows(&hosts, "redis://127.0.0.1:6379"));
        assert!(allows(&hosts, "redis://127.0.0.1"), "default port 6379");
        assert!(
            allows(&hosts, "redis://127.0.0.1:6379/0"),
            "database path is not part of the check"
        );
        assert!(!allows(&hosts, "redis://127.0.0.1:6380"));
        assert!(!allows(&hosts, "redis://localhost:6379"));
        assert!(!allows(&hosts, "rediss://127.0.0.1:6379"));
    }

    #[test]
    fn missing_port_means_well_known_port() {
        let hosts = ["redis://cache"];
        assert!(allows(&hosts, "redis://cache:6379"));
        assert!(!allows(&hosts, "redis://cache:7000"));
    }

    #[test]
    fn wildcards() {
        assert!(allows(&["redis://*:*"], "redis://anything:1234"));
        assert!(!allows(&["redis://*:*"], "http://anything:1234"));
        assert!(allows(&["*://*:*"], "redis://anything:1234"));
        assert!(allows(&["redis://*:6379"], "redis://x"));
        assert!(allows(&["redis://localhost:*"], "redis://localhost:16379"));
        assert!(allows(
            &["redis://*.example.com"],
            "redis://cache.example.com"
        ));
        assert!(!allows(&["redis://*.example.com"], "redis://example.com"));
        assert!(allows(&["redis://h:6000..7000"], "redis://h:6379"));
        assert!(!allows(&["redis://h:6000..7000"], "redis://h:7000"));
    }

    #[test]
    fn nothing_allowed_by_default() {
        assert!(!allows(&[], "redis://127.0.0.1:6379"));
    }

    #[test]
    fn url_without_scheme_uses_default_scheme() {
        assert!(allows(&["redis://127.0.0.1:6379"], "127.0.0.1:6379"));
    }

    #[test]
    fn invalid_entries_are_rejected() {
        for bad in [
            "127.0.0.1:6379",
            "redis://a*b",
            "redis://h:x",
            "foo://h",
            "redis://h:1/path",
        ] {
            assert!(
                AllowedHosts::parse(&[bad]).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
