//! Method parameter schemas: the one place a method's parameters, their types, ranges and
//! defaults are declared. The suite validator (before anything runs), `moebench apply`,
//! `moebench methods` and the docs table all read a method's [`MethodSchema`]; the method then
//! deserializes the checked, default-filled map into its own typed struct.
//!
//! Pure serde_json, no tensors: suites are validated without the model runtime.
use serde::Serialize;
use serde_json::{Map, Number, Value};
use std::fmt;

/// What a method does to a model, which decides how it is saved and whether it can be
/// swapped on a loaded checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    /// Replaces the router's selection rule; weights unchanged (saved as a router file).
    RouterSwap,
    /// Changes the model's weights or structure in place (pruning, merging, upcycling, training).
    Transform,
    /// Builds a new model from several (DUME, BTX, weight averaging).
    Builder,
}

impl MethodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::RouterSwap => "router swap",
            MethodKind::Transform => "transform",
            MethodKind::Builder => "builder",
        }
    }
}

/// A bound of a numeric range; `None` on a side means unbounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    Inclusive(f64),
    Exclusive(f64),
}

impl Bound {
    fn below(self, v: f64) -> bool {
        match self {
            Bound::Inclusive(b) => v >= b,
            Bound::Exclusive(b) => v > b,
        }
    }
    fn above(self, v: f64) -> bool {
        match self {
            Bound::Inclusive(b) => v <= b,
            Bound::Exclusive(b) => v < b,
        }
    }
}

/// The type (and range) of one parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    Bool,
    /// A whole number in `[min, max]` (`2.0` is accepted as 2; `2.9` is an error).
    Int {
        min: i64,
        max: Option<i64>,
    },
    /// A finite number within the bounds.
    Float {
        min: Option<Bound>,
        max: Option<Bound>,
    },
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// Free text (a path relative to the suite, a name, …).
    Text,
    /// A list of whole numbers ≥ `min` (layer indices, …).
    IntList {
        min: i64,
    },
    /// A list of finite numbers within the bounds.
    FloatList {
        min: Option<Bound>,
        max: Option<Bound>,
    },
    /// A list of strings (model references, text files, …).
    TextList,
    /// One number for every layer, or a list with one per layer (each within the bounds).
    FloatOrList {
        min: Option<Bound>,
        max: Option<Bound>,
    },
}

impl ParamType {
    /// A whole number ≥ `min`.
    pub const fn int(min: i64) -> Self {
        ParamType::Int { min, max: None }
    }
    /// A number > 0.
    pub const POSITIVE: Self = ParamType::Float {
        min: Some(Bound::Exclusive(0.0)),
        max: None,
    };
    /// A number ≥ 0.
    pub const NON_NEGATIVE: Self = ParamType::Float {
        min: Some(Bound::Inclusive(0.0)),
        max: None,
    };
    /// A number ≥ 1 (fractional expert counts).
    pub const AT_LEAST_ONE: Self = ParamType::Float {
        min: Some(Bound::Inclusive(1.0)),
        max: None,
    };
    /// A probability threshold in (0, 1].
    pub const PROBABILITY: Self = ParamType::Float {
        min: Some(Bound::Exclusive(0.0)),
        max: Some(Bound::Inclusive(1.0)),
    };
    /// A fraction in [0, 1].
    pub const UNIT: Self = ParamType::Float {
        min: Some(Bound::Inclusive(0.0)),
        max: Some(Bound::Inclusive(1.0)),
    };
    /// A fraction in [0, 1): something removed, never all of it.
    pub const FRACTION_REMOVED: Self = ParamType::Float {
        min: Some(Bound::Inclusive(0.0)),
        max: Some(Bound::Exclusive(1.0)),
    };
}

impl ParamType {
    /// Whether a plain list is this parameter's value (so only a list of lists sweeps it).
    pub fn takes_list(self) -> bool {
        matches!(
            self,
            ParamType::IntList { .. }
                | ParamType::FloatList { .. }
                | ParamType::TextList
                | ParamType::FloatOrList { .. }
        )
    }

    /// `int`, `float`, `bool`, `string`, `[int]`, … as `moebench methods` prints it.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::Bool => "bool",
            ParamType::Int { .. } => "int",
            ParamType::Float { .. } => "float",
            ParamType::Choice(_) => "choice",
            ParamType::Text => "string",
            ParamType::IntList { .. } => "[int]",
            ParamType::FloatList { .. } => "[float]",
            ParamType::TextList => "[string]",
            ParamType::FloatOrList { .. } => "float | [float]",
        }
    }

    /// The allowed values in words (`[1, ∞)`, `(0, 1]`, `a | b`), or `""` when any value of the
    /// type is allowed.
    pub fn range(self) -> String {
        fn interval(min: Option<Bound>, max: Option<Bound>) -> String {
            if min.is_none() && max.is_none() {
                return String::new();
            }
            let lo = match min {
                None => "(-∞".to_owned(),
                Some(Bound::Inclusive(b)) => format!("[{b}"),
                Some(Bound::Exclusive(b)) => format!("({b}"),
            };
            let hi = match max {
                None => "∞)".to_owned(),
                Some(Bound::Inclusive(b)) => format!("{b}]"),
                Some(Bound::Exclusive(b)) => format!("{b})"),
            };
            format!("{lo}, {hi}")
        }
        match self {
            ParamType::Bool | ParamType::Text | ParamType::TextList => String::new(),
            ParamType::Int { min, max } => match max {
                Some(max) => format!("[{min}, {max}]"),
                None => format!("[{min}, ∞)"),
            },
            ParamType::IntList { min } => format!("each ≥ {min}"),
            ParamType::Float { min, max }
            | ParamType::FloatList { min, max }
            | ParamType::FloatOrList { min, max } => interval(min, max),
            ParamType::Choice(choices) => choices.join(" | "),
        }
    }

    /// Checks `value` against the type, returning it normalised (`2.0` → `2` for integers), or
    /// what is wrong in words.
    fn check(self, value: &Value) -> Result<Value, String> {
        let in_bounds = |v: f64, min: Option<Bound>, max: Option<Bound>| {
            v.is_finite() && min.is_none_or(|b| b.below(v)) && max.is_none_or(|b| b.above(v))
        };
        let number = |v: &Value, min, max| -> Result<Value, String> {
            match v.as_f64() {
                Some(x) if in_bounds(x, min, max) => Ok(v.clone()),
                Some(_) => Err(format!("is {v}; allowed: {}", self.range())),
                None => Err(format!("must be a number, got {v}")),
            }
        };
        let integer = |v: &Value, min: i64, max: Option<i64>| -> Result<Value, String> {
            let whole = match v {
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                        .map(|f| f as i64)
                }),
                _ => None,
            };
            match whole {
                Some(i) if i >= min && max.is_none_or(|m| i <= m) => Ok(Value::from(i)),
                Some(_) => Err(format!("is {v}; allowed: {}", self.range())),
                None => Err(format!("must be a whole number, got {v}")),
            }
        };
        let list = |v: &Value, each: &dyn Fn(&Value) -> Result<Value, String>| match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| each(item).map_err(|e| format!("item {i} {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Err(format!("must be a list, got {other}")),
        };
        match self {
            ParamType::Bool => match value {
                Value::Bool(_) => Ok(value.clone()),
                other => Err(format!("must be true or false, got {other}")),
            },
            ParamType::Int { min, max } => integer(value, min, max),
            ParamType::Float { min, max } => number(value, min, max),
            ParamType::Choice(choices) => match value.as_str() {
                Some(s) if choices.contains(&s) => Ok(value.clone()),
                _ => Err(format!("is {value}; allowed: {}", choices.join(", "))),
            },
            ParamType::Text => match value {
                Value::String(s) if !s.is_empty() => Ok(value.clone()),
                other => Err(format!("must be a non-empty string, got {other}")),
            },
            ParamType::IntList { min } => list(value, &|v| integer(v, min, None)),
            ParamType::FloatList { min, max } => list(value, &|v| number(v, min, max)),
            ParamType::TextList => list(value, &|v| ParamType::Text.check(v)),
            ParamType::FloatOrList { min, max } => match value {
                Value::Array(_) => list(value, &|v| number(v, min, max)),
                v => number(v, min, max),
            },
        }
    }
}

/// A parameter's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamDefault {
    /// The suite must give it.
    Required,
    /// Absent unless given (the method then does without it).
    Unset,
    /// Computed from the model when the method is applied; the text says from what.
    FromModel(&'static str),
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'static str),
}

impl ParamDefault {
    /// The value filled in when the parameter is not given, if any.
    fn value(self) -> Option<Value> {
        match self {
            ParamDefault::Required | ParamDefault::Unset | ParamDefault::FromModel(_) => None,
            ParamDefault::Bool(b) => Some(Value::Bool(b)),
            ParamDefault::Int(i) => Some(Value::from(i)),
            ParamDefault::Float(f) => Number::from_f64(f).map(Value::Number),
            ParamDefault::Text(s) => Some(Value::from(s)),
        }
    }

    /// The default in words, as `moebench methods` and the docs table print it.
    pub fn describe(self) -> String {
        match self {
            ParamDefault::Required => "required".into(),
            ParamDefault::Unset => "unset".into(),
            ParamDefault::FromModel(what) => format!("model's {what}"),
            ParamDefault::Bool(b) => b.to_string(),
            ParamDefault::Int(i) => i.to_string(),
            ParamDefault::Float(f) => f.to_string(),
            ParamDefault::Text(s) => s.into(),
        }
    }
}

/// One parameter of a method.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: ParamDefault,
    /// One line: what it controls (and the paper section it comes from).
    pub doc: &'static str,
}

impl ParamSpec {
    pub const fn new(
        name: &'static str,
        ty: ParamType,
        default: ParamDefault,
        doc: &'static str,
    ) -> Self {
        Self {
            name,
            ty,
            default,
            doc,
        }
    }
}

/// A method as suites see it: name, kind, parameters.
#[derive(Debug)]
pub struct MethodSchema {
    pub name: &'static str,
    pub kind: MethodKind,
    /// One line for `moebench methods` and the docs table.
    pub description: &'static str,
    pub params: &'static [ParamSpec],
    /// Reads the suite's calibration batches: it then also takes `mix` (one weight per
    /// `calibration.mix` source), which the runner consumes to re-weight the calibration mix.
    pub calibrated: bool,
}

/// The parameter that re-weights a calibrated method's calibration mix.
pub const MIX_PARAM: &str = "mix";

const MIX_SPEC: ParamSpec = ParamSpec {
    name: MIX_PARAM,
    ty: ParamType::FloatList {
        min: Some(Bound::Inclusive(0.0)),
        max: None,
    },
    default: ParamDefault::Unset,
    doc: "one weight per calibration.mix source, re-weighting the calibration text for this method",
};

/// A parameter problem, naming the method and the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("method `{method}`: parameter `{param}` {problem}")]
pub struct ParamError {
    pub method: String,
    pub param: String,
    pub problem: String,
}

impl MethodSchema {
    /// Every parameter, `mix` included for calibrated methods.
    pub fn all_params(&self) -> impl Iterator<Item = &ParamSpec> {
        self.params
            .iter()
            .chain(self.calibrated.then_some(&MIX_SPEC))
    }

    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.all_params().find(|p| p.name == name)
    }

    fn error(&self, param: &str, problem: impl Into<String>) -> ParamError {
        ParamError {
            method: self.name.into(),
            param: param.into(),
            problem: problem.into(),
        }
    }

    /// Checks every given parameter (known, of its type, in range; required ones present) and
    /// returns the map with the defaults filled in. All problems, not just the first.
    pub fn check(&self, given: &Map<String, Value>) -> Result<Map<String, Value>, Vec<ParamError>> {
        let mut errors = Vec::new();
        let mut out = Map::new();
        let mut keys: Vec<&String> = given.keys().collect();
        keys.sort();
        for key in keys {
            let value = &given[key];
            match self.param(key) {
                None => {
                    let names: Vec<&str> = self.all_params().map(|p| p.name).collect();
                    let hint = crate::suggest::closest(key, names.iter().copied())
                        .map(|best| format!("did you mean `{best}`? "))
                        .unwrap_or_default();
                    let accepted = match names.is_empty() {
                        true => "none".to_owned(),
                        false => names.join(", "),
                    };
                    errors
                        .push(self.error(key, format!("is unknown ({hint}accepted: {accepted})")));
                }
                Some(spec) => match spec.ty.check(value) {
                    Ok(v) => {
                        out.insert(key.clone(), v);
                    }
                    Err(problem) => errors.push(self.error(key, problem)),
                },
            }
        }
        for spec in self.all_params() {
            if out.contains_key(spec.name) || given.contains_key(spec.name) {
                continue;
            }
            match spec.default {
                ParamDefault::Required => errors.push(self.error(spec.name, "is required")),
                d => {
                    if let Some(v) = d.value() {
                        out.insert(spec.name.into(), v);
                    }
                }
            }
        }
        match errors.is_empty() {
            true => Ok(out),
            false => Err(errors),
        }
    }

    /// The schema as `moebench methods --json` prints it.
    pub fn to_json(&self) -> Value {
        let params: Vec<Value> = self
            .all_params()
            .map(|p| {
                let mut v = serde_json::json!({
                    "name": p.name,
                    "type": p.ty.name(),
                    "default": p.default.value().unwrap_or(Value::Null),
                    "default_text": p.default.describe(),
                    "required": p.default == ParamDefault::Required,
                    "doc": p.doc,
                });
                let range = p.ty.range();
                if !range.is_empty() {
                    v["range"] = Value::from(range);
                }
                v
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "calibrated": self.calibrated,
            "params": params,
        })
    }
}

impl fmt::Display for MethodSchema {
    /// `name (kind): description` and one indented line per parameter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}): {}",
            self.name,
            self.kind.as_str(),
            self.description
        )?;
        for p in self.all_params() {
            let range = p.ty.range();
            let range = match range.is_empty() {
                true => String::new(),
                false => format!(" in {range}"),
            };
            writeln!(
                f,
                "    {}: {}{range}, default {} — {}",
                p.name,
                p.ty.name(),
                p.default.describe(),
                p.doc
            )?;
        }
        Ok(())
    }
}

/// The markdown table of methods that docs/suite-format.md carries (a test keeps them equal).
pub fn markdown_table(schemas: &[&MethodSchema]) -> String {
    let mut out = String::from(
        "| method | kind | parameters (type, range, default) | what it does |\n|---|---|---|---|\n",
    );
    for s in schemas {
        let params: Vec<String> = s
            .all_params()
            .map(|p| {
                let range = p.ty.range();
                let range = match range.is_empty() {
                    true => String::new(),
                    false => format!(" {range}"),
                };
                format!(
                    "`{}`: {}{range}, {}",
                    p.name,
                    p.ty.name(),
                    p.default.describe()
                )
            })
            .collect();
        let params = match params.is_empty() {
            true => "—".to_owned(),
            false => params.join("<br>"),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.name,
            s.kind.as_str(),
            params.replace('|', "\\|"),
            s.description
        ));
    }
    out
}

/// JSON with object keys sorted at every depth and no whitespace: the one serialisation every
/// content hash is taken of, so that hashes depend neither on the key order of a YAML file nor
/// on whether serde_json preserves insertion order.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        scalar => scalar.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: MethodSchema = MethodSchema {
        name: "demo",
        kind: MethodKind::Transform,
        description: "a demo",
        calibrated: true,
        params: &[
            ParamSpec {
                name: "steps",
                ty: ParamType::Int { min: 1, max: None },
                default: ParamDefault::Int(200),
                doc: "optimizer steps",
            },
            ParamSpec {
                name: "compression",
                ty: ParamType::Float {
                    min: Some(Bound::Inclusive(0.0)),
                    max: Some(Bound::Exclusive(1.0)),
                },
                default: ParamDefault::Float(0.5),
                doc: "fraction removed",
            },
            ParamSpec {
                name: "experts",
                ty: ParamType::TextList,
                default: ParamDefault::Required,
                doc: "models",
            },
            ParamSpec {
                name: "mode",
                ty: ParamType::Choice(&["a", "b"]),
                default: ParamDefault::FromModel("mode"),
                doc: "mode",
            },
        ],
    };

    fn check(v: Value) -> Result<Map<String, Value>, Vec<String>> {
        SCHEMA
            .check(v.as_object().unwrap())
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_fill_in_and_integers_normalise() {
        let out = check(json!({"experts": ["x"], "steps": 3.0})).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"experts": ["x"], "steps": 3, "compression": 0.5})
        );
    }

    #[test]
    fn every_problem_is_reported_with_method_and_parameter() {
        let errors =
            check(json!({"steps": 2.9, "compression": 1.0, "stpes": 1, "mode": "c", "mix": [-1]}))
                .unwrap_err();
        assert_eq!(
            errors,
            [
                "method `demo`: parameter `compression` is 1.0; allowed: [0, 1)",
                "method `demo`: parameter `mix` item 0 is -1; allowed: [0, ∞)",
                "method `demo`: parameter `mode` is \"c\"; allowed: a, b",
                "method `demo`: parameter `steps` must be a whole number, got 2.9",
                "method `demo`: parameter `stpes` is unknown (did you mean `steps`? accepted: steps, compression, experts, mode, mix)",
                "method `demo`: parameter `experts` is required",
            ]
        );
    }

    #[test]
    fn non_finite_and_wrong_types_are_rejected() {
        for (v, want) in [
            (json!({"experts": "x"}), "must be a list"),
            (
                json!({"experts": [""]}),
                "item 0 must be a non-empty string",
            ),
            (
                json!({"experts": ["x"], "steps": "3"}),
                "must be a whole number",
            ),
            (
                json!({"experts": ["x"], "steps": 0}),
                "is 0; allowed: [1, ∞)",
            ),
        ] {
            let e = check(v).unwrap_err().join("\n");
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn list_typed_params_take_plain_lists() {
        assert!(ParamType::TextList.takes_list());
        assert!(!ParamType::Bool.takes_list());
        assert_eq!(
            ParamType::Int {
                min: 1,
                max: Some(8)
            }
            .range(),
            "[1, 8]"
        );
    }

    #[test]
    fn schema_prints_for_humans_and_machines() {
        let text = SCHEMA.to_string();
        assert!(text.starts_with("demo (transform): a demo\n"), "{text}");
        assert!(text.contains("    compression: float in [0, 1), default 0.5 — fraction removed"));
        let json = SCHEMA.to_json();
        assert_eq!(json["params"][0]["default"], json!(200));
        assert_eq!(json["params"][2]["required"], json!(true));
        assert_eq!(json["params"][4]["name"], json!("mix"));
        let table = markdown_table(&[&SCHEMA]);
        assert!(
            table.contains("| `demo` | transform | `steps`: int [1, ∞), 200<br>"),
            "{table}"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 0, "c": 1}], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,{"c":1,"d":0}]},"b":1}"#
        );
    }
}
