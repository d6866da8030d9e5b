//! The subset of the Spin application manifest (version 2) this host understands.
//!
//! Unknown keys are ignored: `spin up` validates more, but a test host that refuses
//! a manifest Spin would accept is worse than one that ignores a field it has no
//! use for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

/// Spin's default address when neither the trigger nor the application names one.
pub const DEFAULT_REDIS_ADDRESS: &str = "redis://localhost:6379";

/// A parsed manifest together with the directory its relative paths start from.
#[derive(Debug)]
pub struct Manifest {
    pub dir: PathBuf,
    pub application: Application,
    pub variables: BTreeMap<String, VariableDef>,
    pub http_triggers: Vec<HttpTrigger>,
    pub redis_triggers: Vec<RedisTrigger>,
    pub components: BTreeMap<String, Component>,
}

#[derive(Debug, Deserialize)]
pub struct Application {
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub trigger: ApplicationTriggers,
}

#[derive(Debug, Default, Deserialize)]
pub struct ApplicationTriggers {
    pub http: Option<ApplicationHttp>,
    pub redis: Option<ApplicationRedis>,
}

#[derive(Debug, Deserialize)]
pub struct ApplicationHttp {
    pub base: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ApplicationRedis {
    /// May contain `{{ variable }}` templates.
    pub address: Option<String>,
}

/// An entry of `[variables]`.
#[derive(Debug, Deserialize)]
pub struct VariableDef {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Deserialize)]
pub struct HttpTrigger {
    pub route: HttpRoute,
    pub component: String,
    #[serde(default)]
    pub executor: Option<HttpExecutor>,
}

/// `route = "/path"` or `route = { private = true }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HttpRoute {
    Path(String),
    Private { private: bool },
}

#[derive(Debug, Deserialize)]
pub struct HttpExecutor {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
pub struct RedisTrigger {
    /// May contain `{{ variable }}` templates.
    pub channel: String,
    pub component: String,
    /// May contain `{{ variable }}` templates; falls back to the application's address.
    pub address: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Component {
    pub source: ComponentSource,
    pub description: Option<String>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variables: values are templates over application variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    pub build: Option<ComponentBuild>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ComponentSource {
    Path(String),
    Remote { url: String },
}

#[derive(Debug, Deserialize)]
pub struct ComponentBuild {
    pub command: BuildCommands,
    pub workdir: Option<String>,
}

/// Spin accepts one shell command or a list run in order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BuildCommands {
    One(String),
    Many(Vec<String>),
}

impl BuildCommands {
    pub fn as_slice(&self) -> &[String] {
        match self {
            BuildCommands::One(command) => std::slice::from_ref(command),
            BuildCommands::Many(commands) => commands,
        }
    }
}

/// The raw document; trigger types other than `http` and `redis` are ignored.
#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    application: Application,
    #[serde(default)]
    variables: BTreeMap<String, VariableDef>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, Component>,
}

#[derive(Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
    #[serde(default)]
    redis: Vec<RedisTrigger>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read manifest {}", path.display()))?;
        let dir = path
            .parent()
            .map(|dir| {
                if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Self::parse(&text, dir).with_context(|| format!("invalid manifest {}", path.display()))
    }

    pub fn parse(text: &str, dir: PathBuf) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text)?;
        ensure!(
            raw.spin_manifest_version.as_integer() == Some(2),
            "spin_manifest_version must be 2, found {}",
            raw.spin_manifest_version
        );
        let manifest = Self {
            dir,
            application: raw.application,
            variables: raw.variables,
            http_triggers: raw.trigger.http,
            redis_triggers: raw.trigger.redis,
            components: raw.component,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        for (name, def) in &self.variables {
            crate::variables::validate_name(name)
                .with_context(|| format!("invalid application variable name {name:?}"))?;
            match (def.required, &def.default) {
                (true, Some(_)) => {
                    bail!("variable {name:?} is required and so cannot have a default")
                }
                (false, None) => bail!("variable {name:?} must be required or have a default"),
                _ => {}
            }
        }
        for (id, component) in &self.components {
            if let ComponentSource::Remote { url } = &component.source {
                bail!(
                    "component {id:?}: remote sources ({url}) are not supported by the test host"
                );
            }
            for key in component.variables.keys() {
                crate::variables::validate_name(key)
                    .with_context(|| format!("component {id:?}: invalid variable name {key:?}"))?;
            }
        }
        let trigger_components = self
            .http_triggers
            .iter()
            .map(|t| &t.component)
            .chain(self.redis_triggers.iter().map(|t| &t.component));
        for id in trigger_components {
            ensure!(
                self.components.contains_key(id),
                "a trigger refers to component {id:?}, which is not defined"
            );
        }
        for trigger in &self.http_triggers {
            if let Some(executor) = &trigger.executor {
                ensure!(
                    executor.kind == "spin",
                    "component {:?}: HTTP executor {:?} is not supported by the test host",
                    trigger.component,
                    executor.kind
                );
            }
            if let HttpRoute::Private { private: false } = trigger.route {
                bail!(
                    "route must be a string pattern or '{{ private = true }}': component {:?} has {{ private = false }}",
                    trigger.component
                );
            }
        }
        Ok(())
    }

    /// The application-level HTTP base path (`/` by default).
    pub fn http_base(&self) -> &str {
        self.application
            .trigger
            .http
            .as_ref()
            .and_then(|http| http.base.as_deref())
            .unwrap_or("/")
    }

    /// The unresolved address template a Redis trigger subscribes at.
    pub fn redis_address_template<'a>(&'a self, trigger: &'a RedisTrigger) -> &'a str {
        trigger
            .address
            .as_deref()
            .or_else(|| {
                self.application
                    .trigger
                    .redis
                    .as_ref()
                    .and_then(|r| r.address.as_deref())
            })
            .unwrap_or(DEFAULT_REDIS_ADDRESS)
    }

    pub fn source_path(&self, component: &Component) -> Option<PathBuf> {
        match &component.source {
            ComponentSource::Path(path) => Some(self.dir.join(path)),
            ComponentSource::Remote { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
        spin_manifest_version = 2

        [application]
        name = "tasks"
        version = "0.1.0"
        description = "Task API"
        unknown_key = "ignored"

        [application.trigger.redis]
        address = "redis://{{ redis_host }}:6379"

        [variables]
        redis_host = { default = "127.0.0.1" }
        api_token = { required = true, secret = true }
        empty_secret = { default = "", secret = true }

        [[trigger.http]]
        route = "/info"
        component = "info"

        [[trigger.http]]
        route = "/tasks/..."
        component = "list"

        [[trigger.http]]
        route = { private = true }
        component = "list"

        [[trigger.redis]]
        channel = "tasks"
        component = "worker"

        [[trigger.redis]]
        channel = "{{ channel }}"
        component = "worker"
        address = "redis://other:6380"

        [[trigger.cron]]
        component = "info"

        [component.info]
        source = "target/info.wasm"
        key_value_stores = ["default"]
        allowed_outbound_hosts = ["redis://{{ redis_host }}"]
        [component.info.variables]
        token = "Bearer {{api_token}}"
        [component.info.build]
        command = "cargo build --release"
        workdir = "components/info"
        watch = ["src/**/*.rs"]

        [component.list]
        source = "list.wasm"

        [component.worker]
        source = "worker.wasm"
        [component.worker.build]
        command = ["echo one", "echo two"]
    "#;

    fn manifest() -> Manifest {
        Manifest::parse(MANIFEST, PathBuf::from("/app")).unwrap()
    }

    #[test]
    fn parses_the_parts_the_app_uses() {
        let m = manifest();
        assert_eq!(m.application.name, "tasks");
        assert_eq!(m.application.version.as_deref(), Some("0.1.0"));
        assert_eq!(m.variables.len(), 3);
        assert!(m.variables["api_token"].required && m.variables["api_token"].secret);
        assert_eq!(m.http_triggers.len(), 3);
        assert!(matches!(
            m.http_triggers[2].route,
            HttpRoute::Private { private: true }
        ));
        assert_eq!(m.redis_triggers.len(), 2);
        let info = &m.components["info"];
        assert_eq!(info.key_value_stores, ["default"]);
        assert_eq!(info.variables["token"], "Bearer {{api_token}}");
        assert_eq!(
            m.source_path(info),
            Some(PathBuf::from("/app/target/info.wasm"))
        );
        let build = info.build.as_ref().unwrap();
        assert_eq!(build.command.as_slice(), ["cargo build --release"]);
        assert_eq!(build.workdir.as_deref(), Some("components/info"));
        let worker_build = m.components["worker"].build.as_ref().unwrap();
        assert_eq!(worker_build.command.as_slice(), ["echo one", "echo two"]);
    }

    #[test]
    fn redis_address_falls_back_to_application_then_default() {
        let m = manifest();
        assert_eq!(
            m.redis_address_template(&m.redis_triggers[0]),
            "redis://{{ redis_host }}:6379"
        );
        assert_eq!(
            m.redis_address_template(&m.redis_triggers[1]),
            "redis://other:6380"
        );

        let bare = Manifest::parse(
            "spin_manifest_version = 2\n[application]\nname = \"a\"\n\
             [[trigger.redis]]\nchannel = \"c\"\ncomponent = \"w\"\n\
             [component.w]\nsource = \"w.wasm\"\n",
            PathBuf::from("."),
        )
        .unwrap();
        assert_eq!(
            bare.redis_address_template(&bare.redis_triggers[0]),
            DEFAULT_REDIS_ADDRESS
        );
        assert_eq!(bare.http_base(), "/");
    }

    #[test]
    fn rejects_what_spin_rejects() {
        let cases = [
            ("spin_manifest_version = 1\n[application]\nname = \"a\"\n", "version"),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[variables]\nx = { required = true, default = \"1\" }\n",
                "required",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[variables]\nx = {}\n",
                "must be required",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[variables]\nBad = { default = \"1\" }\n",
                "invalid application variable",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"nope\"\n",
                "not defined",
            ),
        ];
        for (text, expected) in cases {
            let err = format!(
                "{:#}",
                Manifest::parse(text, PathBuf::from(".")).unwrap_err()
            );
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
