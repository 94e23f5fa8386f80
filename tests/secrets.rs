//! Secrets and properties from a command (issue 20 points 1 and 5), with a
//! real master, worker, git repository and curl:
//! - a build whose steps print a `[secrets]` value in many ways (plain,
//!   base64 at three alignments, URL-encoded two ways, hex, JSON, on
//!   stderr, in an argv command's header, from the environment, split over
//!   two writes a second apart) while a live SSE stream watches it: the
//!   value and each of those encodings are found nowhere (the log files,
//!   the database and its WAL, the API, the build page, the SSE stream,
//!   master.log, status.json), and the log says `<secret:tok>` instead;
//! - set_property steps store a regex group and a stripped output as build
//!   properties, used by a later step and shown in the API, and a value
//!   holding the secret is stored masked;
//! - a secret file made 0644 fails the next step that uses it, with the
//!   file named, and nothing runs;
//! - `checkconfig` refuses a 0644 secret file, a secrets directory others
//!   may enter, names with `/` or `..`, a missing file, a reference
//!   without `[secrets]`, and set_property regexes without exactly one
//!   group.

use crate::common::*;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A secret with characters that every encoding changes (`/`, `+`, `=`,
/// `:`, a space, a backslash) and none that HTML escapes, so the build
/// page and the SSE stream would show it as it is if it leaked.
const VALUE: &str = r"Tok3n/with+plus=eq:sp ace\back-slash_0123";

/// The steps added to the `runtests` builder of [`Setup::new`]. The first
/// waits for `GATE` (replaced by a path), so the live stream is open before
/// any secret is sent.
const STEPS: &str = r#"
[[builders.steps]]
type = "shell"
name = "gate"
command = 'i=0; while [ ! -e GATE ]; do sleep 0.05; i=$((i+1)); [ $i -gt 2400 ] && exit 1; done; echo gate open'
[[builders.steps]]
type = "shell"
name = "leak"
command = '''
S="%(secret:tok)s"
printf 'plain: %s\n' "$S"
printf %s "$S" | base64 -w0; echo
printf 'x%s' "$S" | base64 -w0; echo
printf 'xy%s' "$S" | base64 -w0; echo
/usr/bin/python3 -c 'import sys, json, urllib.parse as u; s = sys.argv[1]; print(u.quote(s, safe="")); print(u.quote_plus(s)); print(s.encode().hex()); print(json.dumps({"t": s}))' "$S"
printf 'stderr: %s\n' "$S" >&2
H="${S%????????????}"
printf 'split: %s' "$H"
sleep 1
printf '%s end\n' "${S#"$H"}"
'''
[[builders.steps]]
type = "shell"
name = "argv"
command = ["/usr/bin/printf", "argv: %s\n", "%(secret:tok)s"]
[[builders.steps]]
type = "shell"
name = "env"
command = ["/bin/sh", "-c", "printf 'env: %s\n' \"$TOKEN\""]
env = { TOKEN = "%(secret:tok)s" }
[[builders.steps]]
type = "set_property"
property = "version"
command = "printf 'name: demo\nversion: 1.2.3\n'"
regex = 'version: (\S+)'
[[builders.steps]]
type = "set_property"
name = "stripped"
property = "greeting"
command = "echo '   hello world   '"
[[builders.steps]]
type = "set_property"
name = "leaky"
property = "leaky"
command = 'printf "  %s  \n" "%(secret:tok)s"'
[[builders.steps]]
type = "set_property"
name = "too-much"
property = "big"
command = "head -c 70000 /dev/zero | tr '\\0' x"
halt_on_failure = false
flunk_on_failure = false
[[builders.steps]]
type = "set_property"
name = "no-match"
property = "nothing"
command = "echo abc"
regex = 'v(\d+)'
halt_on_failure = false
flunk_on_failure = false
[[builders.steps]]
type = "shell"
name = "use-version"
command = "echo version=%(prop:version)s greeting=%(prop:greeting)s"
"#;

/// `value` and the encodings the `leak` step prints, as Python and
/// coreutils make them, plus the bare base64 of the value at each
/// alignment: none of them may appear anywhere (also used by
/// `release_example`).
pub(crate) fn forms(value: &str) -> Vec<String> {
    let out = run_ok(
        "/usr/bin/python3",
        &[
            "-c",
            r#"import sys, json, base64, urllib.parse as u
s = sys.argv[1]
b = s.encode()
forms = [s, u.quote(s, safe=""), u.quote_plus(s), u.quote(s), b.hex(), b.hex().upper(),
         json.dumps(s)[1:-1], json.dumps({"t": s})]
for pad in [b"", b"x", b"xy"]:
    full = base64.b64encode(pad + b).decode()
    forms.append(full)
    k = len(pad)
    forms.append(full[-(-8 * k // 6):(8 * (k + len(b))) // 6] if k else full[:(8 * len(b)) // 6])
print(json.dumps(forms))"#,
            value,
        ],
    );
    let forms: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    assert!(forms.len() >= 12, "{forms:?}");
    forms
}

/// The forms found in `text`, for a message.
pub(crate) fn leaks<'a>(forms: &'a [String], text: &[u8]) -> Vec<&'a str> {
    forms
        .iter()
        .filter(|f| text.windows(f.len()).any(|w| w == f.as_bytes()))
        .map(String::as_str)
        .collect()
}

/// Asserts that none of `texts` (what, bytes) nor any of `files` holds
/// one of the secret's `forms`, naming where one was found.
pub(crate) fn assert_nothing_leaks(
    forms: &[String],
    mut texts: Vec<(String, Vec<u8>)>,
    files: &[PathBuf],
) {
    for f in files {
        texts.push((
            f.display().to_string(),
            std::fs::read(f).unwrap_or_default(),
        ));
    }
    for (what, text) in &texts {
        assert_eq!(leaks(forms, text), Vec::<&str>::new(), "in {what}");
    }
}

/// Every file under `dir`, recursively.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `master/secrets` (0700) with secret `tok` (0600).
fn write_secret(master: &Path) -> PathBuf {
    let dir = master.join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A trailing newline, as `echo value > file` leaves: not part of it.
    write_private(&dir.join("tok"), &format!("{VALUE}\n"));
    dir.join("tok")
}

#[test]
fn a_secret_is_masked_everywhere_and_properties_come_from_commands() {
    let s = Setup::new(PASSING_TEST, "");
    let gate = s.tmp.path().join("gate");
    let steps = STEPS.replace("GATE", gate.to_str().unwrap());
    s.edit_cfg(|t| format!("{t}{steps}\n[secrets]\ndir = \"secrets\"\n"));
    let secret_file = write_secret(&s.master);
    add_user(&s.master, USER, PASSWORD);
    let forms = forms(VALUE);

    let _m = s.start_master();
    let _w = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "build with a secret");
    let buildid = wait_for("the build to start", Duration::from_secs(60), || {
        let v = get_json(&s.url("/api/v2/builds?order=buildid"));
        v["builds"].as_array()?.first()?["buildid"].as_i64()
    });

    // A live stream of the build page, open before any secret is sent.
    let sse_path = s.tmp.path().join("sse.txt");
    let mut sse = Command::new("curl")
        .args([
            "-sN",
            "--max-time",
            "120",
            &s.url(&format!("/builds/{buildid}/live")),
        ])
        .stdout(std::fs::File::create(&sse_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the live stream to open", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&sse_path).ok()?;
        text.contains("retry:").then_some(())
    });
    std::fs::write(&gate, "").unwrap();

    let build = s.wait_build(buildid, Duration::from_secs(120));
    assert_eq!(build["results"], 0, "{build}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sse.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the live stream did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut sse_text = Vec::new();
    std::fs::File::open(&sse_path)
        .unwrap()
        .read_to_end(&mut sse_text)
        .unwrap();
    let sse_text = String::from_utf8_lossy(&sse_text).into_owned();
    assert!(sse_text.contains("event: end"), "{sse_text}");
    assert!(sse_text.contains("secret:tok"), "{sse_text}");

    // The log says where each secret was.
    let leak = s.step_log(buildid, "leak");
    let masks = leak.matches("<secret:tok>").count();
    assert!(masks >= 10, "{masks} masks in\n{leak}");
    for line in [
        "plain: <secret:tok>\n",
        "stderr: <secret:tok>\n",
        "split: <secret:tok> end\n",
    ] {
        assert!(leak.contains(line), "{line:?} not in\n{leak}");
    }
    // Only the steps that use it get it (the worker's header lists the
    // names of the variables it was sent).
    assert!(leak.contains("MINIBOT_SECRET_tok"), "{leak}");
    for step in ["gate", "use-version", "argv"] {
        let log = s.step_log(buildid, step);
        assert!(!log.contains("MINIBOT_SECRET"), "{step}: {log}");
    }
    assert!(s.step_log(buildid, "argv").contains("argv: <secret:tok>"));
    assert!(s.step_log(buildid, "env").contains("env: <secret:tok>"));

    // set_property: a regex group and a stripped output, used by a later
    // step and shown in the API; a value holding the secret is masked.
    let used = s.step_log(buildid, "use-version");
    assert!(
        used.contains("version=1.2.3 greeting=hello world\n"),
        "{used}"
    );
    let b = get_json(&s.url(&format!("/api/v2/builds/{buildid}?property=*")));
    let props = &b["builds"][0]["properties"];
    assert_eq!(
        props["version"],
        serde_json::json!(["1.2.3", "SetPropertyFromCommand Step"]),
        "{props}"
    );
    assert_eq!(props["greeting"][0], "hello world", "{props}");
    assert_eq!(props["leaky"][0], "<secret:tok>", "{props}");
    // Bounded: more than 64 KiB of output, or a regex that does not match,
    // fails the step (here one that does not fail the build) and sets
    // nothing.
    assert!(
        props.get("big").is_none() && props.get("nothing").is_none(),
        "{props}"
    );
    let page = curl(&[&s.url(&format!("/builders/runtests/builds/{}", build["number"]))]).1;
    assert!(
        page.contains("<dt>version</dt><dd>1.2.3 <small>SetPropertyFromCommand Step</small></dd>"),
        "the build page shows the property: {page}"
    );
    for (name, says) in [
        ("too-much", "printed more than 65536 bytes"),
        ("no-match", "does not match the output"),
    ] {
        let st = s.step(buildid, name);
        assert_eq!(st["results"], 2, "{st}");
        assert!(st["state_string"].as_str().unwrap().contains(says), "{st}");
    }

    // Nowhere: the API, the build page, the logs, the database, the
    // master's own files, the live stream.
    let mut texts: Vec<(String, Vec<u8>)> = vec![("SSE stream".into(), sse_text.into_bytes())];
    let steps = get_json(&s.url(&format!("/api/v2/builds/{buildid}/steps")));
    for st in steps["steps"].as_array().unwrap() {
        let name = st["name"].as_str().unwrap();
        texts.push((
            format!("log of {name}"),
            s.step_log(buildid, name).into_bytes(),
        ));
    }
    for path in [
        format!("/api/v2/builds/{buildid}?property=*"),
        format!("/api/v2/builds/{buildid}/steps"),
        format!("/builders/runtests/builds/{}", build["number"]),
        "/api/v2/buildrequests?property=*".to_string(),
    ] {
        let (code, body) = curl(&[&s.url(&path)]);
        assert_eq!(code, 200, "{path}: {body}");
        texts.push((path, body.into_bytes()));
    }
    let mut files = files_under(&s.master);
    files.retain(|f| !f.starts_with(s.master.join("secrets")));
    let worker_log = s.tmp.path().join("example-worker").join("worker.log");
    assert!(worker_log.exists(), "{}", worker_log.display());
    files.push(worker_log);
    assert!(
        files.iter().any(|f| f.ends_with("state.sqlite-wal")),
        "{files:?}"
    );
    assert_nothing_leaks(&forms, texts, &files);

    // A secret file others may read fails the next step that uses it, with
    // the file named; the step runs nothing.
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.push(&s.head, "master", "build with an exposed secret");
    let builds = s.wait_builds(2, Duration::from_secs(120));
    let second = builds[1]["buildid"].as_i64().unwrap();
    assert_eq!(builds[1]["results"], 2, "{}", builds[1]);
    let leak = s.step_log(second, "leak");
    assert!(
        leak.contains(&format!("{}: mode 0644", secret_file.display())),
        "{leak}"
    );
    assert!(!leak.contains("plain:"), "{leak}");
    let leak_step = s.step(second, "leak");
    let state = leak_step["state_string"].as_str().unwrap();
    assert!(state.contains("secret \"tok\" cannot be used"), "{state}");
}

/// `checkconfig` on the master directory: (exit code, stderr).
fn checkconfig(master: &Path) -> (i32, String) {
    let out = run(MINIBOT, &["checkconfig", master.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn checkconfig_refuses_exposed_missing_and_badly_named_secrets() {
    let s = Setup::new(PASSING_TEST, "");
    let base = std::fs::read_to_string(s.master.join("master.cfg")).unwrap();
    let secret_file = write_secret(&s.master);
    let with = |sections: &str, step: &str| {
        write_private(
            &s.master.join("master.cfg"),
            &format!("{base}\n[[builders.steps]]\n{step}\n{sections}\n"),
        );
        checkconfig(&s.master)
    };
    let secrets = "[secrets]\ndir = \"secrets\"";
    let uses = |name: &str| format!("type = \"shell\"\ncommand = \"echo %(secret:{name})s\"");

    let (code, err) = with(secrets, &uses("tok"));
    assert_eq!(code, 0, "{err}");

    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = with(secrets, &uses("tok"));
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{}: mode 0644", secret_file.display())) && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let dir = s.master.join("secrets");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, err) = with(secrets, &uses("tok"));
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{}: mode 0755", dir.display())),
        "{err}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    for bad in ["../tok", "a/b", "..", ""] {
        let (code, err) = with(secrets, &uses(bad));
        assert_ne!(code, 0, "{bad:?}");
        assert!(err.contains("secret name"), "{bad:?}: {err}");
    }
    let (code, err) = with(secrets, &uses("nope"));
    assert_ne!(code, 0);
    assert!(
        err.contains("there is no file") && err.contains("nope"),
        "{err}"
    );
    let (code, err) = with("", &uses("tok"));
    assert_ne!(code, 0);
    assert!(err.contains("needs a [secrets] section"), "{err}");

    let prop = |regex: &str| {
        format!(
            "type = \"set_property\"\nproperty = \"v\"\ncommand = \"echo 1\"\nregex = '{regex}'"
        )
    };
    let (code, err) = with("", &prop("v(\\d+)"));
    assert_eq!(code, 0, "{err}");
    for (regex, says) in [
        ("(a)(b)", "exactly one"),
        ("no group", "exactly one"),
        ("v(", "invalid regex"),
    ] {
        let (code, err) = with("", &prop(regex));
        assert_ne!(code, 0, "{regex}");
        assert!(err.contains(says), "{regex}: {err}");
    }
}
