//! Tracking plans: per source, a JSON Schema for the `properties` of each planned `track`
//! event, and what to do with unplanned and invalid events.
//!
//! The schema dialect is the widely used core of JSON Schema (draft 2020-12 keywords):
//! `type`, `enum`, `const`, `required`, `properties`, `additionalProperties`, `items`,
//! `minItems`, `maxItems`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
//! `minLength`, `maxLength`, `allOf`, `anyOf`, `oneOf`, `not`. Annotations (`title`,
//! `description`, `default`, `examples`, `format`, `$schema`, `$id`, `$comment`) are
//! accepted and ignored. Any other keyword is refused when the plan is loaded, so a
//! schema never silently checks less than its author meant.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// What to do with an event that fails the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlanAction {
    /// Keep it anyway.
    Accept,
    /// Keep it in quarantine with the reason.
    #[default]
    Quarantine,
    /// Refuse it (the response says why).
    Reject,
}

/// A schema that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    /// Where in the schema.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JType {
    Null,
    Boolean,
    Object,
    Array,
    Number,
    Integer,
    String,
}

impl JType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "null" => JType::Null,
            "boolean" => JType::Boolean,
            "object" => JType::Object,
            "array" => JType::Array,
            "number" => JType::Number,
            "integer" => JType::Integer,
            "string" => JType::String,
            _ => return None,
        })
    }
    fn matches(self, v: &Value) -> bool {
        match self {
            JType::Null => v.is_null(),
            JType::Boolean => v.is_boolean(),
            JType::Object => v.is_object(),
            JType::Array => v.is_array(),
            JType::Number => v.is_number(),
            JType::Integer => v.as_f64().is_some_and(|f| f.fract() == 0.0),
            JType::String => v.is_string(),
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A compiled schema.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    always: Option<bool>,
    types: Option<Vec<JType>>,
    enumeration: Option<Vec<Value>>,
    constant: Option<Value>,
    required: Vec<String>,
    properties: Vec<(String, Schema)>,
    additional: Option<Box<Schema>>,
    items: Option<Box<Schema>>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    all_of: Vec<Schema>,
    any_of: Vec<Schema>,
    one_of: Vec<Schema>,
    not: Option<Box<Schema>>,
}

impl Schema {
    /// Compiles a JSON Schema document.
    pub fn compile(v: &Value) -> Result<Schema, SchemaError> {
        compile_at(v, "#")
    }

    /// Checks `v`; the error names the path and the broken rule.
    pub fn validate(&self, v: &Value, path: &str) -> Result<(), String> {
        if let Some(b) = self.always {
            return if b {
                Ok(())
            } else {
                Err(format!("{path}: not allowed"))
            };
        }
        if let Some(ts) = &self.types {
            if !ts.iter().any(|t| t.matches(v)) {
                let want: Vec<String> =
                    ts.iter().map(|t| format!("{t:?}").to_lowercase()).collect();
                return Err(format!(
                    "{path}: expected {}, got {}",
                    want.join(" or "),
                    kind_of(v)
                ));
            }
        }
        if let Some(e) = &self.enumeration {
            if !e.contains(v) {
                return Err(format!(
                    "{path}: {v} is not one of {}",
                    Value::Array(e.clone())
                ));
            }
        }
        if let Some(c) = &self.constant {
            if c != v {
                return Err(format!("{path}: expected {c}, got {v}"));
            }
        }
        if let Some(n) = v.as_f64() {
            let bad = |rule: &str, lim: f64| Err(format!("{path}: {n} violates {rule} {lim}"));
            if let Some(m) = self.minimum.filter(|&m| n < m) {
                return bad("minimum", m);
            }
            if let Some(m) = self.maximum.filter(|&m| n > m) {
                return bad("maximum", m);
            }
            if let Some(m) = self.exclusive_minimum.filter(|&m| n <= m) {
                return bad("exclusiveMinimum", m);
            }
            if let Some(m) = self.exclusive_maximum.filter(|&m| n >= m) {
                return bad("exclusiveMaximum", m);
            }
        }
        if let Some(s) = v.as_str() {
            let len = s.chars().count();
            if let Some(m) = self.min_length.filter(|&m| len < m) {
                return Err(format!("{path}: shorter than minLength {m}"));
            }
            if let Some(m) = self.max_length.filter(|&m| len > m) {
                return Err(format!("{path}: longer than maxLength {m}"));
            }
        }
        if let Some(a) = v.as_array() {
            if let Some(m) = self.min_items.filter(|&m| a.len() < m) {
                return Err(format!("{path}: fewer than minItems {m}"));
            }
            if let Some(m) = self.max_items.filter(|&m| a.len() > m) {
                return Err(format!("{path}: more than maxItems {m}"));
            }
            if let Some(items) = &self.items {
                for (i, x) in a.iter().enumerate() {
                    items.validate(x, &format!("{path}[{i}]"))?;
                }
            }
        }
        if let Some(o) = v.as_object() {
            for r in &self.required {
                if !o.contains_key(r) {
                    return Err(format!("{path}.{r}: required property is missing"));
                }
            }
            for (k, x) in o {
                let sub = format!("{path}.{k}");
                match self.properties.iter().find(|(n, _)| n == k) {
                    Some((_, s)) => s.validate(x, &sub)?,
                    None => {
                        if let Some(add) = &self.additional {
                            add.validate(x, &sub).map_err(|e| {
                                if add.always == Some(false) {
                                    format!("{sub}: property is not in the plan")
                                } else {
                                    e
                                }
                            })?;
                        }
                    }
                }
            }
        }
        for s in &self.all_of {
            s.validate(v, path)?;
        }
        if !self.any_of.is_empty() && !self.any_of.iter().any(|s| s.validate(v, path).is_ok()) {
            return Err(format!("{path}: matches none of anyOf"));
        }
        if !self.one_of.is_empty() {
            let n = self
                .one_of
                .iter()
                .filter(|s| s.validate(v, path).is_ok())
                .count();
            if n != 1 {
                return Err(format!("{path}: matches {n} of oneOf, expected exactly 1"));
            }
        }
        if let Some(n) = &self.not {
            if n.validate(v, path).is_ok() {
                return Err(format!("{path}: matches a schema it must not"));
            }
        }
        Ok(())
    }
}

fn err(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_string(),
        message: message.into(),
    }
}

fn num(o: &Map<String, Value>, k: &str, path: &str) -> Result<Option<f64>, SchemaError> {
    match o.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| err(&format!("{path}/{k}"), "expected a number")),
    }
}

fn count(o: &Map<String, Value>, k: &str, path: &str) -> Result<Option<usize>, SchemaError> {
    match o.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| err(&format!("{path}/{k}"), "expected a non-negative integer")),
    }
}

fn list(o: &Map<String, Value>, k: &str, path: &str) -> Result<Vec<Schema>, SchemaError> {
    match o.get(k) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, s)| compile_at(s, &format!("{path}/{k}/{i}")))
            .collect(),
        Some(_) => Err(err(
            &format!("{path}/{k}"),
            "expected a non-empty array of schemas",
        )),
    }
}

const KNOWN: &[&str] = &[
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "$schema",
    "$id",
    "$comment",
];

fn compile_at(v: &Value, path: &str) -> Result<Schema, SchemaError> {
    let o = match v {
        Value::Bool(b) => {
            return Ok(Schema {
                always: Some(*b),
                ..Schema::default()
            })
        }
        Value::Object(o) => o,
        _ => return Err(err(path, "a schema must be an object or a boolean")),
    };
    if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(err(path, format!("keyword '{k}' is not supported")));
    }
    let types = match o.get("type") {
        None => None,
        Some(Value::String(s)) => Some(vec![JType::parse(s)
            .ok_or_else(|| err(&format!("{path}/type"), format!("unknown type '{s}'")))?]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|t| {
                    t.as_str()
                        .and_then(JType::parse)
                        .ok_or_else(|| err(&format!("{path}/type"), format!("unknown type {t}")))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(err(&format!("{path}/type"), "expected a string or array")),
    };
    let enumeration = match o.get("enum") {
        None => None,
        Some(Value::Array(a)) => Some(a.clone()),
        Some(_) => return Err(err(&format!("{path}/enum"), "expected an array")),
    };
    let required = match o.get("required") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|r| {
                r.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err(&format!("{path}/required"), "expected strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err(&format!("{path}/required"), "expected an array")),
    };
    let properties = match o.get("properties") {
        None => Vec::new(),
        Some(Value::Object(p)) => p
            .iter()
            .map(|(k, s)| Ok((k.clone(), compile_at(s, &format!("{path}/properties/{k}"))?)))
            .collect::<Result<_, SchemaError>>()?,
        Some(_) => return Err(err(&format!("{path}/properties"), "expected an object")),
    };
    let sub = |k: &str| -> Result<Option<Box<Schema>>, SchemaError> {
        o.get(k)
            .map(|s| compile_at(s, &format!("{path}/{k}")).map(Box::new))
            .transpose()
    };
    Ok(Schema {
        always: None,
        types,
        enumeration,
        constant: o.get("const").cloned(),
        required,
        properties,
        additional: sub("additionalProperties")?,
        items: sub("items")?,
        min_items: count(o, "minItems", path)?,
        max_items: count(o, "maxItems", path)?,
        minimum: num(o, "minimum", path)?,
        maximum: num(o, "maximum", path)?,
        exclusive_minimum: num(o, "exclusiveMinimum", path)?,
        exclusive_maximum: num(o, "exclusiveMaximum", path)?,
        min_length: count(o, "minLength", path)?,
        max_length: count(o, "maxLength", path)?,
        all_of: list(o, "allOf", path)?,
        any_of: list(o, "anyOf", path)?,
        one_of: list(o, "oneOf", path)?,
        not: sub("not")?,
    })
}

/// A source's tracking plan.
#[derive(Debug, Clone, Default)]
pub struct TrackingPlan {
    events: HashMap<String, Schema>,
    /// For `track` events with no schema in the plan.
    pub unplanned: PlanAction,
    /// For events that fail their schema.
    pub invalid: PlanAction,
}

/// The plan's word on one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanVerdict {
    /// Fine.
    Pass,
    /// Not fine; what to do about it.
    Fail {
        /// `unplanned_event` or `schema_violation`.
        code: &'static str,
        /// Why.
        reason: String,
        /// What the plan says to do.
        action: PlanAction,
    },
}

impl TrackingPlan {
    /// Compiles every event schema; reports every broken one.
    pub fn new(
        events: &HashMap<String, Value>,
        unplanned: PlanAction,
        invalid: PlanAction,
    ) -> Result<Self, Vec<SchemaError>> {
        let mut compiled = HashMap::new();
        let mut errors = Vec::new();
        for (name, v) in events {
            match Schema::compile(v) {
                Ok(s) => {
                    compiled.insert(name.clone(), s);
                }
                Err(mut e) => {
                    e.path = format!("event '{name}' {}", e.path);
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(Self {
                events: compiled,
                unplanned,
                invalid,
            })
        } else {
            Err(errors)
        }
    }

    /// Checks a `track` event's properties (raw JSON text, or none).
    pub fn check(&self, event: &str, properties: Option<&str>) -> PlanVerdict {
        let Some(schema) = self.events.get(event) else {
            if self.unplanned == PlanAction::Accept {
                return PlanVerdict::Pass;
            }
            return PlanVerdict::Fail {
                code: "unplanned_event",
                reason: format!("event '{event}' is not in the tracking plan"),
                action: self.unplanned,
            };
        };
        let value = match properties {
            None => Value::Object(Map::new()),
            Some(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        };
        match schema.validate(&value, "properties") {
            Ok(()) => PlanVerdict::Pass,
            Err(reason) => PlanVerdict::Fail {
                code: "schema_violation",
                reason,
                action: self.invalid,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> TrackingPlan {
        let mut events = HashMap::new();
        events.insert(
            "Order Completed".to_string(),
            json!({
                "type": "object",
                "required": ["revenue", "currency"],
                "properties": {
                    "revenue": {"type": "number", "minimum": 0},
                    "currency": {"enum": ["TRY", "EUR", "USD"]},
                    "products": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
                }
            }),
        );
        TrackingPlan::new(&events, PlanAction::Reject, PlanAction::Quarantine).expect("valid plan")
    }

    #[test]
    fn verdicts_name_the_field() {
        let p = plan();
        assert_eq!(
            p.check(
                "Order Completed",
                Some(r#"{"revenue":10,"currency":"TRY"}"#)
            ),
            PlanVerdict::Pass
        );
        let fail = |props: &str| match p.check("Order Completed", Some(props)) {
            PlanVerdict::Fail { reason, action, .. } => (reason, action),
            PlanVerdict::Pass => panic!("passed: {props}"),
        };
        let (r, a) = fail(r#"{"revenue":"10","currency":"TRY"}"#);
        assert_eq!(a, PlanAction::Quarantine);
        assert!(
            r.contains("properties.revenue") && r.contains("expected number"),
            "{r}"
        );
        assert!(fail(r#"{"revenue":10}"#)
            .0
            .contains("properties.currency: required"));
        assert!(fail(r#"{"revenue":-1,"currency":"TRY"}"#)
            .0
            .contains("minimum"));
        assert!(
            fail(r#"{"revenue":1,"currency":"TRY","products":[{"x":1}]}"#)
                .0
                .contains("products[0].sku")
        );
        match p.check("Mystery", None) {
            PlanVerdict::Fail { code, action, .. } => {
                assert_eq!(code, "unplanned_event");
                assert_eq!(action, PlanAction::Reject);
            }
            PlanVerdict::Pass => panic!("unplanned passed"),
        }
    }

    #[test]
    fn unsupported_keywords_are_refused_at_load() {
        let mut events = HashMap::new();
        events.insert(
            "A".to_string(),
            json!({"type": "object", "patternProperties": {}}),
        );
        events.insert("B".to_string(), json!({"type": "strin"}));
        let errs =
            TrackingPlan::new(&events, PlanAction::Accept, PlanAction::Accept).expect_err("bad");
        assert_eq!(errs.len(), 2);
        assert!(errs.iter().any(|e| e.message.contains("patternProperties")));
    }

    #[test]
    fn combinators() {
        let s = Schema::compile(
            &json!({"anyOf": [{"type": "string"}, {"type": "integer"}], "not": {"const": 3}}),
        )
        .expect("ok");
        assert!(s.validate(&json!("x"), "v").is_ok());
        assert!(s.validate(&json!(2), "v").is_ok());
        assert!(s.validate(&json!(3), "v").is_err());
        assert!(s.validate(&json!(2.5), "v").is_err());
        let one =
            Schema::compile(&json!({"oneOf": [{"minimum": 0}, {"maximum": 10}]})).expect("ok");
        assert!(one.validate(&json!(5), "v").is_err());
        assert!(one.validate(&json!(50), "v").is_ok());
        let closed =
            Schema::compile(&json!({"properties": {"a": {}}, "additionalProperties": false}))
                .expect("ok");
        assert!(closed
            .validate(&json!({"b": 1}), "p")
            .unwrap_err()
            .contains("p.b: property is not in the plan"));
    }
}
