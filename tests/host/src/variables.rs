//! Application and component variables, as Spin's static and environment providers
//! resolve them, and the guest interfaces that read them.
//!
//! Precedence, highest first: `--variable name=value`, the environment variable
//! `SPIN_VARIABLE_<NAME>`, the manifest default. Values are resolved once at startup;
//! with only static and environment providers that is indistinguishable from Spin's
//! lazy resolution.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};

use crate::bindings::fermyon::spin2_0_0::variables as spin_variables;
use crate::bindings::wasi::config::store as wasi_config;
use crate::manifest::VariableDef;
use crate::runtime::InstanceState;

/// Checks a variable name the way Spin's expression engine does.
pub fn validate_name(name: &str) -> Result<()> {
    let Some(first) = name.bytes().next() else {
        bail!("must not be empty");
    };
    if let Some(invalid) = name
        .chars()
        .find(|c| !(*c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        bail!("invalid character {invalid:?}: only lowercase ASCII letters, digits and '_' are allowed");
    }
    if !first.is_ascii_lowercase() {
        bail!("must start with a lowercase ASCII letter");
    }
    if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        bail!("must end with a lowercase ASCII letter or digit");
    }
    if name.contains("__") {
        bail!("must not contain multiple consecutive underscores");
    }
    Ok(())
}

/// One piece of a `literal {{ variable }} literal` template.
#[derive(Debug, PartialEq)]
enum Part<'a> {
    Literal(&'a str),
    Variable(&'a str),
}

fn parse_template(template: &str) -> Result<Vec<Part<'_>>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Literal(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .with_context(|| format!("unterminated '{{{{' in template {template:?}"))?;
        let name = after[..end].trim();
        validate_name(name)
            .with_context(|| format!("invalid variable {name:?} in template {template:?}"))?;
        parts.push(Part::Variable(name));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest));
    }
    Ok(parts)
}

/// The resolved values of `[variables]`.
#[derive(Debug)]
pub struct AppVariables {
    values: HashMap<String, String>,
}

impl AppVariables {
    /// Resolves every declared variable; a required variable without a value is an error.
    ///
    /// `env` looks up process environment variables (a parameter so tests need not
    /// touch the real environment).
    pub fn resolve(
        definitions: &BTreeMap<String, VariableDef>,
        overrides: &[(String, String)],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        for (name, _) in overrides {
            if !definitions.contains_key(name) {
                eprintln!("Warning: --variable {name} is not declared in the manifest's [variables]; ignored");
            }
        }
        let mut values = HashMap::new();
        for (name, definition) in definitions {
            let overridden = overrides
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone());
            let value = overridden
                .or_else(|| env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())))
                .or_else(|| definition.default.clone());
            match value {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None => bail!(
                    "no value for required variable {name:?}: set SPIN_VARIABLE_{} or pass --variable {name}=...",
                    name.to_ascii_uppercase()
                ),
            }
        }
        Ok(Self { values })
    }

    /// Expands `{{ name }}` references; naming an undeclared variable is an error.
    pub fn expand(&self, template: &str) -> Result<String> {
        let mut out = String::with_capacity(template.len());
        for part in parse_template(template)? {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(name) => out.push_str(self.values.get(name).with_context(|| {
                    format!("template {template:?} refers to undeclared variable {name:?}")
                })?),
            }
        }
        Ok(out)
    }
}

/// A component's own variables, expanded against the application variables.
#[derive(Debug)]
pub struct ComponentVariables {
    values: BTreeMap<String, String>,
}

impl ComponentVariables {
    pub fn resolve(templates: &BTreeMap<String, String>, app: &AppVariables) -> Result<Self> {
        let values = templates
            .iter()
            .map(|(key, template)| Ok((key.clone(), app.expand(template)?)))
            .collect::<Result<_>>()?;
        Ok(Self { values })
    }

    fn get(&self, component_id: &str, name: &str) -> Result<String, spin_variables::Error> {
        validate_name(name).map_err(|e| spin_variables::Error::InvalidName(e.to_string()))?;
        self.values.get(name).cloned().ok_or_else(|| {
            spin_variables::Error::Undefined(format!("no variable for {component_id:?}.{name:?}"))
        })
    }
}

impl spin_variables::Host for InstanceState {
    async fn get(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<String, spin_variables::Error>> {
        Ok(self.component.variables.get(&self.component.id, &name))
    }
}

impl wasi_config::Host for InstanceState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, wasi_config::Error>> {
        // Spin answers `none` for both undefined and invalid names here.
        Ok(Ok(self
            .component
            .variables
            .get(&self.component.id, &key)
            .ok()))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, wasi_config::Error>> {
        let all = &self.component.variables.values;
        Ok(Ok(all
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(entries: &[(&str, Option<&str>, bool)]) -> BTreeMap<String, VariableDef> {
        entries
            .iter()
            .map(|(name, default, required)| {
                let def = VariableDef {
                    default: default.map(str::to_owned),
                    required: *required,
                    secret: false,
                };
                (name.to_string(), def)
            })
            .collect()
    }

    #[test]
    fn names_follow_spin_rules() {
        for ok in ["a", "redis_address_host", "x1", "a_b_c"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "A", "1a", "_a", "a_", "a__b", "a-b", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn templates_parse_with_optional_whitespace() {
        assert_eq!(
            parse_template("redis://{{host}}:{{ port }}/x").unwrap(),
            [
                Part::Literal("redis://"),
                Part::Variable("host"),
                Part::Literal(":"),
                Part::Variable("port"),
                Part::Literal("/x"),
            ]
        );
        assert_eq!(parse_template("plain").unwrap(), [Part::Literal("plain")]);
        assert!(parse_template("{{ open").is_err());
        assert!(parse_template("{{ Bad }}").is_err());
    }

    #[test]
    fn precedence_is_flag_then_env_then_default() {
        let definitions = defs(&[
            ("a", Some("default-a"), false),
            ("b", Some("default-b"), false),
            ("c", Some("default-c"), false),
        ]);
        let env = |name: &str| match name {
            "SPIN_VARIABLE_A" => Some("env-a".to_owned()),
            "SPIN_VARIABLE_B" => Some("env-b".to_owned()),
            _ => None,
        };
        let overrides = [("a".to_owned(), "flag-a".to_owned())];
        let vars = AppVariables::resolve(&definitions, &overrides, env).unwrap();
        assert_eq!(
            vars.expand("{{a}} {{b}} {{c}}").unwrap(),
            "flag-a env-b default-c"
        );
    }

    #[test]
    fn required_variable_needs_a_value() {
        let definitions = defs(&[("token", None, true)]);
        let err = AppVariables::resolve(&definitions, &[], |_| None).unwrap_err();
        assert!(err.to_string().contains("SPIN_VARIABLE_TOKEN"), "{err}");
        let vars = AppVariables::resolve(&definitions, &[], |_| Some("s3cret".into())).unwrap();
        assert_eq!(vars.expand("Bearer {{ token }}").unwrap(), "Bearer s3cret");
    }

    #[test]
    fn empty_default_is_a_value() {
        let definitions = defs(&[("secret", Some(""), false)]);
        let vars = AppVariables::resolve(&definitions, &[], |_| None).unwrap();
        assert_eq!(vars.expand("[{{ secret }}]").unwrap(), "[]");
    }

    #[test]
    fn component_variables_are_private_and_resolved() {
        let app =
            AppVariables::resolve(&defs(&[("host", Some("127.0.0.1"), false)]), &[], |_| None)
                .unwrap();
        let templates =
            BTreeMap::from([("redis_url".to_owned(), "redis://{{ host }}:6379".to_owned())]);
        let vars = ComponentVariables::resolve(&templates, &app).unwrap();
        assert_eq!(
            vars.get("c", "redis_url").unwrap(),
            "redis://127.0.0.1:6379"
        );
        assert!(matches!(
            vars.get("c", "host"),
            Err(spin_variables::Error::Undefined(_))
        ));
        assert!(matches!(
            vars.get("c", "Nope"),
            Err(spin_variables::Error::InvalidName(_))
        ));

        let undeclared = BTreeMap::from([("x".to_owned(), "{{ missing }}".to_owned())]);
        assert!(ComponentVariables::resolve(&undeclared, &app).is_err());
    }
}
