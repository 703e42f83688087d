//! The event schema (docs/events.schema.json) and a validator for the part of JSON Schema
//! (draft 2020-12) it uses, so tests check every event they produce against the schema the
//! project ships. A keyword or pattern syntax the validator does not implement is an error,
//! never silently ignored: the schema cannot promise more than the tests check.
use serde_json::Value;

/// The shipped schema.
pub fn event_schema() -> Value {
    serde_json::from_str(include_str!("../../docs/events.schema.json"))
        .expect("docs/events.schema.json is JSON")
}

/// Checks `events` against the event schema; the error lists every violation, with the
/// event's index and the JSON pointer of the offending value.
pub fn validate_events<'a>(events: impl IntoIterator<Item = &'a Value>) -> Result<(), String> {
    let schema = event_schema();
    let mut errors = Vec::new();
    for (i, e) in events.into_iter().enumerate() {
        let mut v = Validator { root: &schema, errors: Vec::new() };
        v.check(&schema, e, "");
        if v.errors.is_empty() {
            if let Err(m) = culprit_is_named(e) {
                v.errors.push(m);
            }
        }
        errors.extend(v.errors.into_iter().map(|m| format!("event {i}: {m}\n  in {e}")));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// The explanation is rendered from the culprit: it contains the culprit's rendering.
fn culprit_is_named(e: &Value) -> Result<(), String> {
    let c: crate::anomaly::Culprit =
        serde_json::from_value(e["culprit"].clone()).map_err(|err| format!("/culprit: {err}"))?;
    let named = c.to_string();
    let text = e["explanation"].as_str().unwrap_or("");
    if text.contains(&named) {
        Ok(())
    } else {
        Err(format!("/explanation does not name the culprit (\"{named}\")"))
    }
}

/// Validates one instance against a schema (for the validator's own tests and other schemas).
pub fn validate(schema: &Value, instance: &Value) -> Result<(), Vec<String>> {
    let mut v = Validator { root: schema, errors: Vec::new() };
    v.check(schema, instance, "");
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(v.errors)
    }
}

/// Keywords the validator implements (besides the annotations).
const KEYWORDS: [&str; 20] = [
    "$ref",
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "minProperties",
    "pattern",
    "format",
    "anyOf",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "$defs",
    "title",
    "description",
];

/// Every keyword anywhere in `schema` that the validator would not check, as JSON pointers
/// (also the patterns it cannot parse).
pub fn unimplemented(schema: &Value) -> Vec<String> {
    fn walk(s: &Value, at: &str, out: &mut Vec<String>) {
        let Some(o) = s.as_object() else { return };
        for (k, v) in o {
            let here = format!("{at}/{k}");
            if !KEYWORDS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
                out.push(here.clone());
            }
            match k.as_str() {
                "properties" | "$defs" => {
                    for (name, sub) in v.as_object().into_iter().flatten() {
                        walk(sub, &format!("{here}/{name}"), out);
                    }
                }
                "items" | "additionalProperties" => walk(v, &here, out),
                "anyOf" => {
                    for (i, sub) in v.as_array().into_iter().flatten().enumerate() {
                        walk(sub, &format!("{here}/{i}"), out);
                    }
                }
                "pattern" => {
                    if let Err(e) =
                        v.as_str().ok_or("not a string".to_string()).and_then(Pattern::parse)
                    {
                        out.push(format!("{here}: {e}"));
                    }
                }
                "format" if !matches!(v.as_str(), Some("ipv4" | "ipv6")) => out.push(here),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(schema, "", &mut out);
    out
}

struct Validator<'s> {
    root: &'s Value,
    errors: Vec<String>,
}

/// Keywords that only annotate.
const ANNOTATIONS: [&str; 6] = ["$schema", "$id", "title", "description", "$comment", "$defs"];

impl<'s> Validator<'s> {
    fn fail(&mut self, at: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{}: {msg}", if at.is_empty() { "/" } else { at }));
    }

    fn check(&mut self, schema: &'s Value, v: &Value, at: &str) {
        let obj = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return self.fail(at, "no value is allowed here"),
            Value::Object(o) => o,
            _ => return self.fail(at, "schema is neither an object nor a boolean"),
        };
        for (k, s) in obj {
            match k.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "$ref" => match s.as_str().and_then(|r| self.resolve(r)) {
                    Some(target) => self.check(target, v, at),
                    None => self.fail(at, format!("unresolvable $ref {s}")),
                },
                "type" => {
                    let types: Vec<&str> = match s {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                        _ => return self.fail(at, "bad `type` in schema"),
                    };
                    if !types.iter().any(|t| has_type(v, t)) {
                        self.fail(at, format!("{v} is not of type {}", types.join(" or ")));
                    }
                }
                "enum" => {
                    if !s.as_array().is_some_and(|a| a.contains(v)) {
                        self.fail(at, format!("{v} is not one of {s}"));
                    }
                }
                "const" => {
                    if s != v {
                        self.fail(at, format!("{v} is not {s}"));
                    }
                }
                "minimum" | "maximum" => {
                    if let Some(n) = v.as_number() {
                        let below = compare(n, s).is_some_and(std::cmp::Ordering::is_lt);
                        let above = compare(n, s).is_some_and(std::cmp::Ordering::is_gt);
                        if (k == "minimum" && below) || (k == "maximum" && above) {
                            self.fail(at, format!("{v} is beyond the {k} {s}"));
                        }
                    }
                }
                "minLength" | "maxLength" => {
                    if let (Some(t), Some(n)) = (v.as_str(), s.as_u64()) {
                        let len = t.chars().count() as u64;
                        if (k == "minLength" && len < n) || (k == "maxLength" && len > n) {
                            self.fail(at, format!("{v} breaks {k} {n}"));
                        }
                    }
                }
                "minItems" => {
                    if let (Some(a), Some(n)) = (v.as_array(), s.as_u64()) {
                        if (a.len() as u64) < n {
                            self.fail(at, format!("fewer than {n} items"));
                        }
                    }
                }
                "minProperties" => {
                    if let (Some(o), Some(n)) = (v.as_object(), s.as_u64()) {
                        if (o.len() as u64) < n {
                            self.fail(at, format!("fewer than {n} properties"));
                        }
                    }
                }
                "pattern" => {
                    if let Some(t) = v.as_str() {
                        match s.as_str().map(|p| Pattern::parse(p).map(|p| p.matches(t))) {
                            Some(Ok(true)) => {}
                            Some(Ok(false)) => self.fail(at, format!("{v} does not match {s}")),
                            Some(Err(e)) => self.fail(at, format!("pattern {s}: {e}")),
                            None => self.fail(at, "bad `pattern` in schema"),
                        }
                    }
                }
                "format" => {
                    if let Some(t) = v.as_str() {
                        let ok = match s.as_str() {
                            Some("ipv4") => t.parse::<std::net::Ipv4Addr>().is_ok(),
                            Some("ipv6") => t.parse::<std::net::Ipv6Addr>().is_ok(),
                            _ => return self.fail(at, format!("format {s} is not implemented")),
                        };
                        if !ok {
                            self.fail(at, format!("{v} is not a {s}"));
                        }
                    }
                }
                "anyOf" => {
                    let Some(alts) = s.as_array() else { return self.fail(at, "bad anyOf") };
                    let matched = alts.iter().any(|alt| {
                        let mut sub = Validator { root: self.root, errors: Vec::new() };
                        sub.check(alt, v, at);
                        sub.errors.is_empty()
                    });
                    if !matched {
                        self.fail(at, format!("{v} matches none of anyOf {s}"));
                    }
                }
                "required" => {
                    if let Some(o) = v.as_object() {
                        for r in s.as_array().into_iter().flatten().filter_map(Value::as_str) {
                            if !o.contains_key(r) {
                                self.fail(at, format!("missing required field `{r}`"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let (Some(o), Some(props)) = (v.as_object(), s.as_object()) {
                        for (name, sub) in props {
                            if let Some(x) = o.get(name) {
                                self.check(sub, x, &format!("{at}/{name}"));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(o) = v.as_object() {
                        let known = obj.get("properties").and_then(Value::as_object);
                        for (name, x) in o {
                            if !known.is_some_and(|p| p.contains_key(name)) {
                                self.check(s, x, &format!("{at}/{name}"));
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(a) = v.as_array() {
                        for (i, x) in a.iter().enumerate() {
                            self.check(s, x, &format!("{at}/{i}"));
                        }
                    }
                }
                other => self.fail(at, format!("schema keyword `{other}` is not implemented")),
            }
        }
    }

    /// `#/$defs/NAME` style references inside the root schema.
    fn resolve(&self, r: &str) -> Option<&'s Value> {
        let path = r.strip_prefix('#')?;
        if path.is_empty() {
            return Some(self.root);
        }
        self.root.pointer(path)
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        // JSON Schema: a number with a zero fractional part is an integer.
        "integer" => v.is_u64() || v.is_i64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

/// Compares a JSON number with a schema bound, exactly for integers.
fn compare(n: &serde_json::Number, bound: &Value) -> Option<std::cmp::Ordering> {
    let b = bound.as_number()?;
    if let (Some(x), Some(y)) = (n.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (n.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    n.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// The regular expressions the schema uses: `^…$`-anchored sequences of literal characters
/// (`\` escapes one) and `[…]` classes of characters and ranges, each optionally followed by
/// `{n}` or `{n,m}`.
struct Pattern {
    atoms: Vec<Atom>,
}

/// Character ranges, and how many of them in a row (at least, at most).
type Atom = (Vec<(char, char)>, usize, usize);

impl Pattern {
    fn parse(p: &str) -> Result<Self, String> {
        let body = p
            .strip_prefix('^')
            .and_then(|b| b.strip_suffix('$'))
            .ok_or("only patterns anchored with ^ and $ are implemented")?;
        let mut atoms = Vec::new();
        let mut it = body.chars().peekable();
        while let Some(c) = it.next() {
            let set = match c {
                '\\' => {
                    let e = it.next().ok_or("trailing backslash")?;
                    if e.is_ascii_alphanumeric() {
                        return Err(format!("escape \\{e} is not implemented"));
                    }
                    vec![(e, e)]
                }
                '[' => {
                    let mut set = Vec::new();
                    loop {
                        let a = it.next().ok_or("unclosed [")?;
                        if a == ']' {
                            break;
                        }
                        if matches!(a, '\\' | '^') {
                            return Err(format!("`{a}` inside [] is not implemented"));
                        }
                        if it.peek() == Some(&'-') {
                            it.next();
                            match it.next() {
                                Some(']') | None => return Err("a range must end".into()),
                                Some(b) => set.push((a, b)),
                            }
                        } else {
                            set.push((a, a));
                        }
                    }
                    set
                }
                '(' | ')' | '|' | '*' | '+' | '?' | '.' | '{' | '}' | '^' | '$' => {
                    return Err(format!("`{c}` is not implemented"));
                }
                lit => vec![(lit, lit)],
            };
            let (min, max) = if it.peek() == Some(&'{') {
                it.next();
                let spec: String = it.by_ref().take_while(|&c| c != '}').collect();
                let num =
                    |s: &str| s.trim().parse::<usize>().map_err(|_| format!("bad {{{spec}}}"));
                match spec.split_once(',') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => (num(&spec)?, num(&spec)?),
                }
            } else {
                (1, 1)
            };
            atoms.push((set, min, max));
        }
        Ok(Self { atoms })
    }

    fn matches(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        Self::match_from(&self.atoms, &chars)
    }

    /// Backtracking over the counted atoms (the schema's patterns are short).
    fn match_from(atoms: &[Atom], s: &[char]) -> bool {
        let Some(((set, min, max), rest)) = atoms.split_first() else { return s.is_empty() };
        let in_set = |c: char| set.iter().any(|&(a, b)| a <= c && c <= b);
        let run = s.iter().take(*max).take_while(|c| in_set(**c)).count();
        (*min..=run).rev().any(|n| Self::match_from(rest, &s[n..]))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_validator_rejects_what_the_schema_forbids() {
        let s = json!({
            "type": "object", "required": ["a"], "additionalProperties": false,
            "properties": {
                "a": {"type": "integer", "minimum": 1, "maximum": 3},
                "b": {"$ref": "#/$defs/id"},
                "c": {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
                "d": {"type": "array", "items": {"enum": ["x", "y"]}}
            },
            "$defs": {"id": {"type": "string", "pattern": "^1:[A-Za-z0-9+/]{2,3}=\\.$"}}
        });
        assert!(validate(&s, &json!({"a": 2, "b": "1:ab=.", "c": "::1", "d": ["x"]})).is_ok());
        for bad in [
            json!({}),
            json!({"a": 0}),
            json!({"a": 4}),
            json!({"a": 1.5}),
            json!({"a": 2, "z": 1}),
            json!({"a": 2, "b": "1:a=."}),
            json!({"a": 2, "b": "1:abcd=."}),
            json!({"a": 2, "b": "1:ab=x"}),
            json!({"a": 2, "c": "10.0.0.256"}),
            json!({"a": 2, "d": ["z"]}),
        ] {
            assert!(validate(&s, &bad).is_err(), "{bad} should fail");
        }
        // A keyword or pattern the validator cannot check is an error, not a pass.
        assert!(validate(&json!({"multipleOf": 2}), &json!(4)).is_err());
        assert!(validate(&json!({"pattern": "^a+$"}), &json!("a")).is_err());
    }

    #[test]
    fn the_shipped_schema_uses_only_what_the_validator_implements() {
        assert_eq!(unimplemented(&event_schema()), Vec::<String>::new());
        assert!(!unimplemented(&json!({"properties": {"a": {"multipleOf": 2}}})).is_empty());
        let e = json!({
            "schema_version": 1, "kind": "zero_window", "sub_kind": "long",
            "time_first": "2026-12-02T01:02:03.000000004Z",
            "time_last": "2026-12-02T01:02:03.000000004Z",
            "time_first_ns": 1, "time_last_ns": 1, "host": "h", "flow_id": 7,
            "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            "src_ip": "10.0.0.1", "src_port": 1, "dest_ip": "fd00::2", "dest_port": 2,
            "proto": "tcp", "orientation": "syn", "packet_direction": "to_client",
            "flow": {"src": "10.0.0.2", "sport": 2, "dst": "10.0.0.1", "dport": 1, "vlan": 0,
                     "direction": "server_to_client"},
            "vantage": "tap0", "count": 1, "details": {"a": 1},
            "culprit": {"role": "peer", "addr": "10.0.0.2", "port": 2, "mac": null,
                        "evidence": ["window 0"]},
            "explanation": "the endpoint 10.0.0.2:2 stopped reading",
            "fingerprints": [{"role": "r", "addr": "10.0.0.2", "port": 2,
                              "mac": "02:00:00:00:00:01", "ttl": 64, "ip_id": 0,
                              "ip_id_model": "-", "timestamp_option": false, "ts_val": 3}],
            "evidence": {"path": "/x.pcapng", "packets": [1]}
        });
        validate_events([&e]).unwrap();
        let mut bad = e.clone();
        bad["fingerprints"][0]["mac"] = json!("02:00:00:00:00");
        assert!(validate_events([&bad]).is_err());
        // A culprit of another vocabulary, or one the explanation does not name, fails.
        let mut bad = e.clone();
        bad["culprit"]["role"] = json!("gremlins");
        assert!(validate_events([&bad]).is_err());
        let mut bad = e.clone();
        bad["culprit"]["addr"] = json!("10.0.0.3");
        assert!(validate_events([&bad]).unwrap_err().contains("does not name the culprit"));
        let mut bad = e;
        bad.as_object_mut().unwrap().remove("culprit");
        assert!(validate_events([&bad]).is_err());
    }
}
