//! HTTP route matching, on the same `routefinder` crate and route rules as Spin:
//! exact routes, `:name` segments, trailing `/...` wildcards; exact beats wildcard,
//! longer prefixes beat shorter ones; a trailing slash in the path is ignored.

use std::fmt;

use anyhow::{anyhow, Result};

struct RouteHandler {
    component_id: String,
    /// The route with the application base prepended.
    based_route: String,
    /// The route as written in the manifest.
    raw_route: String,
}

pub struct Router {
    inner: routefinder::Router<RouteHandler>,
}

/// How a route is shown in `spin up`'s "Available Routes".
pub struct RouteDisplay<'a>(&'a str);

impl fmt::Display for RouteDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.strip_suffix("/...") {
            Some(prefix) => write!(f, "{prefix} (wildcard)"),
            None => f.write_str(self.0),
        }
    }
}

pub struct RouteMatch<'a> {
    handler: &'a RouteHandler,
    path_info: String,
    named: Vec<(String, String)>,
}

fn strip_one_trailing_slash(s: &str) -> &str {
    s.strip_suffix('/').unwrap_or(s)
}

fn with_base(base: &str, route: &str) -> String {
    let route = if route.starts_with('/') {
        route.to_owned()
    } else {
        format!("/{route}")
    };
    format!(
        "{}{}",
        strip_one_trailing_slash(base),
        strip_one_trailing_slash(&route)
    )
}

impl Router {
    /// `routes` are `(component id, route)` pairs; for a duplicated route the later
    /// entry wins, with a warning, as in Spin.
    pub fn build<'a>(
        base: &str,
        routes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        let mut unique: Vec<RouteHandler> = Vec::new();
        for (component_id, raw_route) in routes {
            let handler = RouteHandler {
                component_id: component_id.to_owned(),
                based_route: with_base(base, raw_route),
                raw_route: raw_route.to_owned(),
            };
            match unique.iter_mut().find(|h| h.raw_route == raw_route) {
                Some(existing) => {
                    eprintln!(
                        "Warning: route {:?} is defined by both {:?} and {:?}; {:?} handles it",
                        handler.based_route, existing.component_id, component_id, component_id
                    );
                    *existing = handler;
                }
                None => unique.push(handler),
            }
        }
        let mut inner = routefinder::Router::new();
        for handler in unique {
            let spec = match handler.based_route.strip_suffix("/...") {
                Some(prefix) => format!("{prefix}/*"),
                None => handler.based_route.clone(),
            };
            inner
                .add(spec.as_str(), handler)
                .map_err(|e| anyhow!("error parsing route {spec:?}: {e}"))?;
        }
        Ok(Self { inner })
    }

    /// `(component id, route as displayed)`, in manifest order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, RouteDisplay<'_>)> {
        self.inner
            .iter()
            .map(|(_, h)| (h.component_id.as_str(), RouteDisplay(&h.based_route)))
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let best = self.inner.best_match(path)?;
        let captures = best.captures();
        // Spin keeps the trailing slash in the path info; routefinder drops it.
        let path_info = match captures.wildcard() {
            None => String::new(),
            Some(rest) => match (rest.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_owned(),
                (false, false) => format!("/{rest}"),
                (false, true) => format!("/{rest}/"),
            },
        };
        let named = captures
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        Some(RouteMatch {
            handler: best.handler(),
            path_info,
            named,
        })
    }
}

impl RouteMatch<'_> {
    pub fn component_id(&self) -> &str {
        &self.handler.component_id
    }

    /// The route including the base, as `spin-matched-route` reports it.
    pub fn based_route(&self) -> &str {
        &self.handler.based_route
    }

    /// The route as written in the manifest (`spin-raw-component-route`).
    pub fn raw_route(&self) -> &str {
        &self.handler.raw_route
    }

    /// The manifest route without a trailing `/...` (`spin-component-route`).
    pub fn component_route(&self) -> &str {
        self.handler
            .raw_route
            .strip_suffix("/...")
            .unwrap_or(&self.handler.raw_route)
    }

    /// The part of the path under a wildcard route (`spin-path-info`).
    pub fn path_info(&self) -> &str {
        &self.path_info
    }

    /// `:name` segments and their values (`spin-path-match-<name>`).
    pub fn named_wildcards(&self) -> &[(String, String)] {
        &self.named
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(base: &str, routes: &[(&'static str, &'static str)]) -> Router {
        Router::build(base, routes.iter().copied()).unwrap()
    }

    fn component(r: &Router, path: &str) -> Option<String> {
        r.route(path).map(|m| m.component_id().to_owned())
    }

    #[test]
    fn exact_routes() {
        let r = router("/", &[("info", "/info"), ("nested", "/info/more")]);
        assert_eq!(component(&r, "/info").as_deref(), Some("info"));
        assert_eq!(component(&r, "/info/").as_deref(), Some("info"));
        assert_eq!(component(&r, "/info/more").as_deref(), Some("nested"));
        assert_eq!(component(&r, "/infox"), None);
        assert_eq!(component(&r, "/info/other"), None);
        assert_eq!(component(&r, "/"), None);
        assert_eq!(r.route("/info").unwrap().path_info(), "");
    }

    #[test]
    fn wildcard_matches_prefix_and_below() {
        let r = router("/", &[("tasks", "/tasks/...")]);
        for (path, info) in [
            ("/tasks", ""),
            ("/tasks/", "/"),
            ("/tasks/42", "/42"),
            ("/tasks/42/restart/", "/42/restart/"),
        ] {
            let m = r
                .route(path)
                .unwrap_or_else(|| panic!("{path} should match"));
            assert_eq!(m.component_id(), "tasks");
            assert_eq!(m.path_info(), info, "path info of {path}");
            assert_eq!(m.based_route(), "/tasks/...");
            assert_eq!(m.raw_route(), "/tasks/...");
            assert_eq!(m.component_route(), "/tasks");
        }
        assert_eq!(component(&r, "/tasksx"), None);
    }

    #[test]
    fn most_specific_wins() {
        let r = router(
            "/",
            &[
                ("all", "/..."),
                ("one", "/one/..."),
                ("two", "/one/two/..."),
                ("exact", "/one/two"),
            ],
        );
        assert_eq!(component(&r, "/one/two").as_deref(), Some("exact"));
        assert_eq!(component(&r, "/one/two/three").as_deref(), Some("two"));
        assert_eq!(component(&r, "/one/x").as_deref(), Some("one"));
        assert_eq!(component(&r, "/elsewhere").as_deref(), Some("all"));
        assert_eq!(component(&r, "/").as_deref(), Some("all"));
    }

    #[test]
    fn base_is_prepended() {
        let r = router("/api/", &[("info", "/info"), ("tasks", "tasks/...")]);
        assert_eq!(component(&r, "/api/info").as_deref(), Some("info"));
        assert_eq!(component(&r, "/info"), None);
        let m = r.route("/api/tasks/1").unwrap();
        assert_eq!(m.based_route(), "/api/tasks/...");
        assert_eq!(m.raw_route(), "tasks/...");
    }

    #[test]
    fn named_segments_are_captured() {
        let r = router("/", &[("user", "/users/:id/...")]);
        let m = r.route("/users/42/tasks").unwrap();
        assert_eq!(m.named_wildcards(), [("id".to_owned(), "42".to_owned())]);
        assert_eq!(m.path_info(), "/tasks");
        assert_eq!(m.component_route(), "/users/:id");
    }

    #[test]
    fn later_duplicate_wins() {
        let r = router("/", &[("first", "/x"), ("second", "/x")]);
        assert_eq!(component(&r, "/x").as_deref(), Some("second"));
        assert_eq!(r.routes().count(), 1);
    }

    #[test]
    fn display_marks_wildcards() {
        let r = router("/", &[("info", "/info"), ("tasks", "/tasks/...")]);
        let shown: Vec<String> = r
            .routes()
            .map(|(id, route)| format!("{id}: {route}"))
            .collect();
        assert_eq!(shown, ["info: /info", "tasks: /tasks (wildcard)"]);
    }
}
