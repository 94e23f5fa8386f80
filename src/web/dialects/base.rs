//! The `base` change-hook dialect (`POST /change_hook/base`): one change
//! described field by field, as Buildbot's `buildbot/www/hooks/base.py`.
//!
//! Owns: field extraction and validation for that dialect. No threads or
//! channels; the HTTP layer calls [`handle`] and stores what it returns.
//!
//! Fields: `repository, project, branch, revision, author` (or `who`),
//! `committer, comments, category, when_timestamp` (or `when`), `files`,
//! `properties, codebase, revlink`. They come from a form-encoded body (where
//! `files` and `properties` are JSON strings) or a JSON object body (where
//! they may also be a real list / object), and, like Buildbot (whose
//! `request.args` merges both), from the URL query for fields the body
//! lacks. A repeated form field takes its first value (`firstOrNothing`).
//!
//! Where Buildbot would fail later with a 500 (a missing `comments`, which
//! its database requires; an unparsable `when_timestamp`, `files` or
//! `properties`), this answers a 400 that names the field. A missing author
//! is accepted, as Buildbot's hook does, and stored as "".

use super::{
    bad, body_kind, check_signature, form_fields, parse_json_bytes, parse_json_str, BodyKind,
    HookError, HookOutcome, HookRequest, HUB_SHA256,
};
use crate::config::BaseDialect;
use crate::model::{now, NewChange};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Parses one base-dialect request into (at most) one change.
pub fn handle(cfg: &BaseDialect, req: &HookRequest) -> Result<HookOutcome, HookError> {
    // GitHub's header, so any sender that can sign like GitHub works.
    check_signature(cfg.secret.as_deref(), req, &[HUB_SHA256], &[req.body])?;
    let fields = Fields::from_request(req)?;

    // Buildbot: `author = args['author']`, and `who` if that is empty.
    let author = fields
        .string("author")?
        .filter(|a| !a.is_empty())
        .or(fields.string("who")?)
        .unwrap_or_default();
    let comments = fields
        .string("comments")?
        .ok_or_else(|| bad("missing field 'comments'"))?;
    let when_timestamp = match fields.get("when_timestamp").or(fields.get("when")) {
        None => now(),
        Some(v) => unix_seconds(v)?,
    };
    let change = NewChange {
        author,
        committer: fields.string("committer")?,
        comments,
        branch: fields.string("branch")?,
        revision: fields.string("revision")?,
        repository: fields.string("repository")?.unwrap_or_default(),
        project: fields.string("project")?.unwrap_or_default(),
        category: fields.string("category")?,
        codebase: fields.string("codebase")?.unwrap_or_default(),
        revlink: fields.string("revlink")?,
        when_timestamp,
        files: fields.files()?,
        properties: fields.properties()?,
    };
    Ok(HookOutcome::Changes {
        changes: vec![change],
        delivery: None,
    })
}

/// The request's fields, body first, then query.
struct Fields(Map<String, Value>);

impl Fields {
    fn from_request(req: &HookRequest) -> Result<Fields, HookError> {
        // curl -d sends a form; a request without Content-Type is read the
        // same way (an empty body then simply has no fields).
        let mut map = match body_kind(req, BodyKind::Form)? {
            BodyKind::Json => match parse_json_bytes(req.body)? {
                Value::Object(map) => map,
                _ => return Err(bad("JSON body must be an object of change fields")),
            },
            BodyKind::Form => {
                let mut map = Map::new();
                for (k, v) in form_fields(req.body) {
                    map.entry(k).or_insert(Value::String(v));
                }
                map
            }
        };
        for (k, v) in &req.query {
            map.entry(k.clone())
                .or_insert_with(|| Value::String(v.clone()));
        }
        Ok(Fields(map))
    }

    /// A present, non-null field.
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A text field. Numbers and booleans are taken as their text (JSON
    /// senders write `"revision": 1234` for Subversion).
    fn string(&self, name: &str) -> Result<Option<String>, HookError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(_) => Err(bad(format!("field '{name}' must be a string"))),
        }
    }

    /// A field that is JSON, or (from forms) a string holding JSON. An empty
    /// string counts as absent, as Buildbot's `if args.get('files')`.
    fn json(&self, name: &str) -> Result<Option<Value>, HookError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => parse_json_str(s, &format!("field '{name}'")).map(Some),
            Some(v) => Ok(Some(v.clone())),
        }
    }

    fn files(&self) -> Result<Vec<String>, HookError> {
        let not_list = || bad("field 'files' must be a JSON list of strings");
        match self.json("files")? {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|f| match f {
                    Value::String(s) => Ok(s),
                    _ => Err(not_list()),
                })
                .collect(),
            Some(_) => Err(not_list()),
        }
    }

    fn properties(&self) -> Result<BTreeMap<String, Value>, HookError> {
        match self.json("properties")? {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => Ok(map.into_iter().collect()),
            Some(_) => Err(bad("field 'properties' must be a JSON object")),
        }
    }
}

/// Unix seconds, as Buildbot's `float(when)`: fractions are accepted and
/// truncated (changes are stored in whole seconds).
fn unix_seconds(v: &Value) -> Result<i64, HookError> {
    let f = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match f {
        // The bound keeps the cast exact-ish and rejects inf/NaN.
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(f as i64),
        _ => Err(bad(format!(
            "bad when_timestamp {v}: expected Unix seconds (e.g. 1717489540)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::dialects::testutil::{request, sign};
    use serde_json::json;

    const FORM: &str = "application/x-www-form-urlencoded";

    fn form(pairs: &[(&str, &str)]) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish()
    }

    fn post(cfg: &BaseDialect, ct: &str, body: &[u8]) -> Result<HookOutcome, HookError> {
        let mut headers = vec![("content-type".to_string(), ct.to_string())];
        if let Some(secret) = &cfg.secret {
            headers.push((
                HUB_SHA256.name.into(),
                format!("sha256={}", sign(secret, body)),
            ));
        }
        handle(cfg, &request(&headers, body))
    }

    fn one(r: Result<HookOutcome, HookError>) -> NewChange {
        match r {
            Ok(HookOutcome::Changes { mut changes, .. }) if changes.len() == 1 => changes.remove(0),
            other => panic!("expected one change, got {other:?}"),
        }
    }

    fn full_form() -> String {
        form(&[
            ("revision", "1234badcaca5678"),
            ("branch", "master"),
            ("comments", "Fix foo bar"),
            ("category", "bug"),
            ("revlink", "https://git.example.org/commit/1234badcaca5678"),
            ("repository", "https://git.example.org/p.git"),
            ("project", "myproject"),
            ("author", "me <me@myself.org>"),
            ("committer", "ci <ci@myself.org>"),
            ("when_timestamp", "1717489540.75"),
            ("files", r#"["src/main.c", "src/foo.c"]"#),
            (
                "properties",
                r#"{"color": "blue", "important": true, "size": 2}"#,
            ),
            ("codebase", "cb"),
        ])
    }

    #[test]
    fn form_with_all_fields() {
        let c = one(post(&BaseDialect::default(), FORM, full_form().as_bytes()));
        assert_eq!(
            c,
            NewChange {
                author: "me <me@myself.org>".into(),
                committer: Some("ci <ci@myself.org>".into()),
                comments: "Fix foo bar".into(),
                branch: Some("master".into()),
                revision: Some("1234badcaca5678".into()),
                repository: "https://git.example.org/p.git".into(),
                project: "myproject".into(),
                category: Some("bug".into()),
                codebase: "cb".into(),
                revlink: Some("https://git.example.org/commit/1234badcaca5678".into()),
                when_timestamp: 1717489540,
                files: vec!["src/main.c".into(), "src/foo.c".into()],
                properties: [
                    ("color".to_string(), json!("blue")),
                    ("important".to_string(), json!(true)),
                    ("size".to_string(), json!(2)),
                ]
                .into_iter()
                .collect(),
            }
        );
    }

    #[test]
    fn form_minimal_who_when_and_query() {
        let body = form(&[
            ("comments", "c"),
            ("who", "w"),
            ("when", "17"),
            ("author", ""),
        ]);
        let mut req = request(&[("content-type".into(), FORM.into())], body.as_bytes());
        req.query = vec![
            ("codebase".into(), "from-query".into()),
            ("comments".into(), "body wins".into()),
        ];
        let c = one(handle(&BaseDialect::default(), &req));
        assert_eq!(c.author, "w");
        assert_eq!(c.comments, "c");
        assert_eq!(c.when_timestamp, 17);
        assert_eq!(c.codebase, "from-query");
        assert_eq!(c.branch, None);
        assert_eq!(c.repository, "");
        assert!(c.files.is_empty() && c.properties.is_empty());

        // Missing author is accepted, as in Buildbot; time defaults to now.
        let c = one(post(&BaseDialect::default(), FORM, b"comments=x"));
        assert_eq!(c.author, "");
        assert!(c.when_timestamp > 1_700_000_000);
    }

    #[test]
    fn json_body() {
        let body = json!({
            "comments": "from json", "author": "a", "revision": 42,
            "files": ["x", "y"], "properties": {"n": [1, 2]},
            "when_timestamp": 1717489540, "branch": null,
        });
        let c = one(post(
            &BaseDialect::default(),
            "application/json",
            &serde_json::to_vec(&body).unwrap(),
        ));
        assert_eq!(c.revision.as_deref(), Some("42"));
        assert_eq!(c.files, ["x", "y"]);
        assert_eq!(c.properties["n"], json!([1, 2]));
        assert_eq!(c.when_timestamp, 1717489540);
        assert_eq!(c.branch, None);

        // JSON-in-strings (the form convention) also works in JSON bodies.
        let body = br#"{"comments":"c","files":"[\"f\"]","properties":"{\"k\":1}"}"#;
        let c = one(post(&BaseDialect::default(), "application/json", body));
        assert_eq!(c.files, ["f"]);
        assert_eq!(c.properties["k"], json!(1));
    }

    #[test]
    fn secret() {
        let cfg = BaseDialect {
            secret: Some("s3cret".into()),
            ..Default::default()
        };
        let body = full_form();
        one(post(&cfg, FORM, body.as_bytes()));

        let unsigned = request(&[("content-type".into(), FORM.into())], body.as_bytes());
        assert!(matches!(
            handle(&cfg, &unsigned),
            Err(HookError::Forbidden(_))
        ));
        let mut wrong = unsigned.clone();
        wrong.headers.push((
            HUB_SHA256.name.into(),
            format!("sha256={}", sign("s3cret", b"other body")),
        ));
        assert!(matches!(handle(&cfg, &wrong), Err(HookError::Forbidden(_))));
        // Without a secret the parser takes it: whether an unsigned hook
        // may run at all (`allow_unsigned`) is change_hook's decision.
        one(handle(&BaseDialect::default(), &unsigned));
    }

    #[test]
    fn bad_fields_are_400() {
        let cfg = BaseDialect::default();
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("author", "a")], "missing field 'comments'"),
            (
                &[("comments", "c"), ("when_timestamp", "yesterday")],
                "bad when_timestamp",
            ),
            (
                &[("comments", "c"), ("when_timestamp", "")],
                "bad when_timestamp",
            ),
            (
                &[("comments", "c"), ("when_timestamp", "inf")],
                "bad when_timestamp",
            ),
            (
                &[("comments", "c"), ("files", "[\"a\",")],
                "malformed JSON in field 'files'",
            ),
            (
                &[("comments", "c"), ("files", "{}")],
                "'files' must be a JSON list",
            ),
            (
                &[("comments", "c"), ("files", "[1]")],
                "'files' must be a JSON list",
            ),
            (
                &[("comments", "c"), ("properties", "{")],
                "malformed JSON in field 'properties'",
            ),
            (
                &[("comments", "c"), ("properties", "[]")],
                "'properties' must be a JSON object",
            ),
        ];
        for (pairs, needle) in cases {
            match post(&cfg, FORM, form(pairs).as_bytes()) {
                Err(HookError::BadRequest(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
        for (ct, body, needle) in [
            ("application/json", &b"[1]"[..], "must be an object"),
            ("application/json", b"{\"comments\":", "malformed JSON"),
            ("application/json", b"{\"comments\":\"\xff\"}", "UTF-8"),
            (
                "application/json",
                b"{\"comments\":[]}",
                "'comments' must be a string",
            ),
            ("text/plain", b"comments=x", "unsupported content type"),
        ] {
            match post(&cfg, ct, body) {
                Err(HookError::BadRequest(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{ct} {body:?}: {other:?}"),
            }
        }
    }
}
