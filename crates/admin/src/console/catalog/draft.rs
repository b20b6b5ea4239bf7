//! The catalog page's forms as posted, and their translation into the JSON
//! bodies the API takes. A draft is turned into JSON and read with the
//! API's own body parser ([`parse_json`]), so a wrong kind, an unknown
//! option or an option of the wrong type is refused with the message
//! `POST /api/v1/providers` would give, naming the same field. A draft is
//! also what a refused form is shown again with, so nothing typed is lost.

use obleth_config::model::ProviderOptions;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::providers::{CreateProvider, ProviderView, UpdateProvider};
use crate::api::routes::{CreateRoute, ReplaceTargets, RouteView};
use crate::error::AdminError;
use crate::extract::parse_json;

/// The most target rows a route form is read with: the API takes 16, and a
/// form with more is refused by it, not cut short here.
const MAX_ROWS: usize = 64;

/// A provider form: the create form has every field, a row's form all but
/// the name and kind. Its `Debug` leaves the credential reference out: a
/// malformed one may be a pasted credential.
#[derive(Clone, Default, Deserialize)]
pub struct ProviderDraft {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub credential_ref: String,
    #[serde(default)]
    pub timeout_ms: String,
    /// A JSON object, as `options` in the API.
    #[serde(default)]
    pub options: String,
}

impl std::fmt::Debug for ProviderDraft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderDraft")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("timeout_ms", &self.timeout_ms)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ProviderDraft {
    /// A stored provider as its row's form shows it.
    pub fn of(p: &ProviderView) -> ProviderDraft {
        ProviderDraft {
            name: p.name.clone(),
            kind: String::new(),
            base_url: p.base_url.clone(),
            credential_ref: p.credential_ref.clone().unwrap_or_default(),
            timeout_ms: p.timeout_ms.to_string(),
            options: options_text(&p.options),
        }
    }

    /// The credential reference to put back in a form: only what has the
    /// shape of a reference, since anything else may be a pasted
    /// credential, which no page shows.
    pub fn shown_credential(&self) -> &str {
        let c = self.credential_ref.trim();
        if c.starts_with("env:") || c.starts_with("file:") {
            c
        } else {
            ""
        }
    }

    /// The body of `POST /api/v1/providers`; empty fields are left out, so
    /// the API's defaults apply.
    pub fn create_body(&self) -> Result<CreateProvider, AdminError> {
        let mut body = Map::new();
        body.insert("name".into(), self.name.trim().into());
        body.insert("kind".into(), self.kind.trim().into());
        if let Some(url) = filled(&self.base_url) {
            body.insert("base_url".into(), url.into());
        }
        if let Some(c) = filled(&self.credential_ref) {
            body.insert("credential_ref".into(), c.into());
        }
        if let Some(ms) = whole("timeout_ms", &self.timeout_ms)? {
            body.insert("timeout_ms".into(), ms);
        }
        if filled(&self.options).is_some() {
            body.insert("options".into(), json("options", &self.options)?);
        }
        read(body)
    }

    /// The body of `PATCH /api/v1/providers/{name}` that makes the provider
    /// what the form says: the base URL, the credential reference (empty
    /// clears it), the timeout (empty keeps it) and the options, which the
    /// form shows whole: an option changed or added is set, one removed is
    /// cleared, and unchanged options are not sent.
    pub fn update_body(&self, current: &ProviderOptions) -> Result<UpdateProvider, AdminError> {
        let mut body = Map::new();
        body.insert("base_url".into(), self.base_url.trim().into());
        body.insert(
            "credential_ref".into(),
            filled(&self.credential_ref).map_or(Value::Null, Value::from),
        );
        if let Some(ms) = whole("timeout_ms", &self.timeout_ms)? {
            body.insert("timeout_ms".into(), ms);
        }
        let wanted = match filled(&self.options) {
            Some(text) => json("options", text)?,
            None => Value::Object(Map::new()),
        };
        let patch = match wanted {
            Value::Object(wanted) => {
                let current = match serde_json::to_value(current) {
                    Ok(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                let mut patch: Map<String, Value> = wanted
                    .iter()
                    .filter(|(k, v)| current.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for k in current.keys().filter(|k| !wanted.contains_key(*k)) {
                    patch.insert(k.clone(), Value::Null);
                }
                (!patch.is_empty()).then_some(Value::Object(patch))
            }
            // Not an object: the API's parser says so, naming `options`.
            other => Some(other),
        };
        if let Some(patch) = patch {
            body.insert("options".into(), patch);
        }
        read(body)
    }
}

/// Options as the form shows them: the API's JSON, indented.
pub fn options_text(options: &ProviderOptions) -> String {
    serde_json::to_string_pretty(options).unwrap_or_else(|_| "{}".to_owned())
}

/// A route's form: its model (when creating) and its target rows, in
/// order. A row without a provider is left out: that is how a target is
/// removed, and how the form's empty row adds none.
#[derive(Debug, Clone, Default)]
pub struct RouteDraft {
    pub model: String,
    pub rows: Vec<TargetRow>,
}

/// One target row as typed.
#[derive(Debug, Clone, Default)]
pub struct TargetRow {
    pub provider: String,
    pub upstream_model: String,
    pub weight: String,
    pub priority: String,
}

impl RouteDraft {
    /// A stored route's targets as its form shows them.
    pub fn of(r: &RouteView) -> RouteDraft {
        RouteDraft {
            model: r.model.clone(),
            rows: r
                .targets
                .iter()
                .map(|t| TargetRow {
                    provider: t.provider.clone(),
                    upstream_model: t.upstream_model.clone().unwrap_or_default(),
                    weight: t.weight.to_string(),
                    priority: t.priority.map(|p| p.to_string()).unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// A posted form: `model` and `targets[N].provider`,
    /// `targets[N].upstream_model`, `targets[N].weight`,
    /// `targets[N].priority`, rows ordered by `N`.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> RouteDraft {
        let mut model = String::new();
        let mut rows = std::collections::BTreeMap::<usize, TargetRow>::new();
        for (name, value) in pairs {
            if name == "model" {
                model = value;
                continue;
            }
            let Some((index, field)) = name
                .strip_prefix("targets[")
                .and_then(|rest| rest.split_once("]."))
            else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            if index >= MAX_ROWS {
                continue;
            }
            let row = rows.entry(index).or_default();
            match field {
                "provider" => row.provider = value,
                "upstream_model" => row.upstream_model = value,
                "weight" => row.weight = value,
                "priority" => row.priority = value,
                _ => {}
            }
        }
        RouteDraft {
            model,
            rows: rows.into_values().collect(),
        }
    }

    /// The body of `POST /api/v1/routes`.
    pub fn create_body(&self) -> Result<CreateRoute, AdminError> {
        let mut body = Map::new();
        body.insert("model".into(), self.model.trim().into());
        body.insert("targets".into(), self.targets()?);
        read(body)
    }

    /// The body of `PUT /api/v1/routes/{id}/targets`.
    pub fn replace_body(&self) -> Result<ReplaceTargets, AdminError> {
        let mut body = Map::new();
        body.insert("targets".into(), self.targets()?);
        read(body)
    }

    /// The rows with a provider as the API's targets, numbered as the API
    /// will number them in its messages; empty fields are left out, so the
    /// API's defaults apply (the client's model, weight 1, the position).
    fn targets(&self) -> Result<Value, AdminError> {
        let mut targets = Vec::new();
        for row in &self.rows {
            let Some(provider) = filled(&row.provider) else {
                continue;
            };
            let i = targets.len();
            let mut target = Map::new();
            target.insert("provider".into(), provider.into());
            if let Some(m) = filled(&row.upstream_model) {
                target.insert("upstream_model".into(), m.into());
            }
            if let Some(w) = whole(&format!("targets[{i}].weight"), &row.weight)? {
                target.insert("weight".into(), w);
            }
            if let Some(p) = whole(&format!("targets[{i}].priority"), &row.priority)? {
                target.insert("priority".into(), p);
            }
            targets.push(Value::Object(target));
        }
        Ok(Value::Array(targets))
    }
}

/// The trimmed text, unless there is none.
fn filled(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

/// A whole number typed into `field`, as JSON; the API judges its range.
fn whole(field: &str, s: &str) -> Result<Option<Value>, AdminError> {
    match filled(s) {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(|n| Some(Value::from(n)))
            .map_err(|_| AdminError::validation(field, "must be a whole number")),
    }
}

/// JSON typed into `field`.
fn json(field: &str, s: &str) -> Result<Value, AdminError> {
    serde_json::from_str(s)
        .map_err(|e| AdminError::validation(field, format!("must be a JSON object ({e})")))
}

/// Reads a body built from a form as the API reads its JSON bodies.
fn read<T: DeserializeOwned>(body: Map<String, Value>) -> Result<T, AdminError> {
    parse_json(Value::Object(body).to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn target_rows_are_read_in_order_and_empty_ones_left_out() {
        let draft = RouteDraft::from_pairs(pairs(&[
            ("csrf", "x"),
            ("model", " gpt-4o "),
            ("targets[1].provider", "b"),
            ("targets[1].weight", "3"),
            ("targets[0].provider", "a"),
            ("targets[0].upstream_model", "mini"),
            ("targets[0].priority", "0"),
            ("targets[2].provider", " "),
            ("targets[2].weight", "9"),
            ("targets[99].provider", "c"),
        ]));
        let body = draft.create_body().unwrap();
        assert_eq!(body.model, "gpt-4o");
        let t: Vec<_> = body
            .targets
            .iter()
            .map(|t| {
                (
                    t.provider.as_str(),
                    t.upstream_model.as_deref(),
                    t.weight,
                    t.priority,
                )
            })
            .collect();
        assert_eq!(t, [("a", Some("mini"), 1, Some(0)), ("b", None, 3, None)]);
    }

    #[test]
    fn numbers_and_json_that_do_not_parse_name_their_field() {
        let check = |draft: RouteDraft, field: &str| {
            let e = draft.replace_body().unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
        };
        let row = |weight: &str, priority: &str| TargetRow {
            provider: "a".into(),
            weight: weight.into(),
            priority: priority.into(),
            ..TargetRow::default()
        };
        check(
            RouteDraft {
                rows: vec![row("1", ""), row("x", "")],
                ..RouteDraft::default()
            },
            "targets[1].weight",
        );
        check(
            RouteDraft {
                rows: vec![row("", "1.5")],
                ..RouteDraft::default()
            },
            "targets[0].priority",
        );
        let provider = ProviderDraft {
            name: "p".into(),
            kind: "mock".into(),
            options: "{nope".into(),
            ..ProviderDraft::default()
        };
        let e = provider.create_body().unwrap_err();
        assert_eq!(e.field(), Some("options"), "{e}");
    }

    #[test]
    fn an_options_edit_sends_only_what_changed() {
        let current = ProviderOptions {
            connect_timeout_ms: Some(1000),
            idle_timeout_ms: Some(2000),
            ..ProviderOptions::default()
        };
        let draft = ProviderDraft {
            base_url: "mock://".into(),
            options: r#"{"connect_timeout_ms": 1000, "first_byte_timeout_ms": 3000}"#.into(),
            ..ProviderDraft::default()
        };
        let patch = draft.update_body(&current).unwrap().options.unwrap();
        assert_eq!(
            Value::Object(patch),
            serde_json::json!({"first_byte_timeout_ms": 3000, "idle_timeout_ms": null})
        );
        let unchanged = ProviderDraft {
            options: options_text(&current),
            ..draft
        };
        assert!(unchanged.update_body(&current).unwrap().options.is_none());
    }

    #[test]
    fn only_a_reference_is_shown_back() {
        for (typed, shown) in [
            ("env:OBLETH_CREDENTIAL_X", "env:OBLETH_CREDENTIAL_X"),
            ("file:/run/key", "file:/run/key"),
            ("sk-live-123", ""),
        ] {
            let draft = ProviderDraft {
                credential_ref: typed.into(),
                ..ProviderDraft::default()
            };
            assert_eq!(draft.shown_credential(), shown);
        }
    }
}
