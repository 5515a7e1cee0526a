//! Image, command/args and env rules, one table each: every case names the code it must get.

use super::*;

const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn code(r: Result<(), Rejection>) -> Option<&'static str> {
    r.err().map(|r| r.reason.code())
}

#[test]
fn image_references_follow_the_oci_grammar() {
    let long_path = format!("r.io/{}", "a".repeat(250));
    let too_long = format!("r.io/{}", "a".repeat(251));
    let digest = format!("docker.io/nvidia/cuda@{SHA}");
    let tagged_digest = format!("nvcr.io/nvidia/pytorch:24.05-py3@{SHA}");
    let sha512 = format!("app@sha512:{}", "ab".repeat(64));
    let tag_too_long = format!("python:{}", "a".repeat(129));
    let two_at = format!("python@{SHA}@{SHA}");
    let upper_digest = format!("python@{}", SHA.to_uppercase());
    let tag_after_digest = format!("python@{SHA}:v1");
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("docker hub short name", "python", None),
        ("docker hub with a tag", "python:3.12-slim", None),
        ("docker hub library path", "docker.io/library/python:3.12-slim", None),
        ("registry with a port", "localhost:5000/team/app:v1", None),
        ("registry host with dashes", "my-registry.example.com/a/b/c:latest", None),
        ("digest only", &digest, None),
        ("tag and digest", &tagged_digest, None),
        ("sha512 digest", &sha512, None),
        ("separators", "ghcr.io/org/my__app.v2-x---y_z:1.0_RC-1", None),
        ("capital tag", "app:Latest_V2", None),
        ("255 characters", &long_path, None),
        ("256 characters", &too_long, Some("invalid_image")),
        ("upper-case path", "docker.io/library/Python", Some("invalid_image")),
        ("space", "python 3.12", Some("invalid_image")),
        ("leading space", " python", Some("invalid_image")),
        ("newline", "python\n", Some("invalid_image")),
        ("tab", "py\tthon", Some("invalid_image")),
        ("non-ASCII", "pythön", Some("invalid_image")),
        ("empty tag", "python:", Some("invalid_image")),
        ("tag starting with a dot", "python:.x", Some("invalid_image")),
        ("tag starting with a dash", "python:-x", Some("invalid_image")),
        ("tag too long", &tag_too_long, Some("invalid_image")),
        ("a one-digit port, not a tag", "python:3/x", None),
        ("no name", ":latest", Some("invalid_image")),
        ("empty component", "docker.io//python", Some("invalid_image")),
        ("trailing slash", "docker.io/python/", Some("invalid_image")),
        ("host without a path", "docker.io/", Some("invalid_image")),
        ("component starting with a separator", "docker.io/_python", Some("invalid_image")),
        ("three underscores", "docker.io/a___b", Some("invalid_image")),
        ("dot then underscore", "docker.io/a._b", Some("invalid_image")),
        ("bad port", "localhost:99999/app", Some("invalid_image")),
        ("port not a number", "localhost:http/app", Some("invalid_image")),
        ("host label ending with a dash", "reg-.io/app", Some("invalid_image")),
        ("bracketed IPv6 host", "[::1]:5000/app", Some("invalid_image")),
        ("'@' without a digest", "python@", Some("invalid_image")),
        ("two '@'", &two_at, Some("invalid_image")),
        ("digest without an algorithm", "python@0123456789abcdef", Some("invalid_image")),
        ("short digest", "python@sha256:abc", Some("invalid_image")),
        ("upper-case digest", &upper_digest, Some("invalid_image")),
        ("md5 digest", "python@md5:0123456789abcdef0123456789abcdef", Some("invalid_image")),
        ("tag after the digest", &tag_after_digest, Some("invalid_image")),
        ("shell in the name", "python;rm -rf /", Some("invalid_image")),
        ("URL scheme", "https://docker.io/python", Some("invalid_image")),
    ];
    for (name, image, want) in cases {
        assert_eq!(code(check_image(image)), want, "{name}: {image:?}");
    }
}

#[test]
fn a_missing_image_has_its_own_reason() {
    assert_eq!(code(check_workload(&Workload::default())), Some("image_missing"));
    assert_eq!(code(check_workload(&Workload::of_image(" "))), Some("invalid_image"));
    assert_eq!(code(check_workload(&Workload::of_image("python:3.12-slim"))), None);
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A name, `command`, `args`, and the code they must get.
type ArgvCase = (&'static str, Vec<String>, Vec<String>, Option<&'static str>);

#[test]
fn command_and_args_are_bounded() {
    let big = "x".repeat(MAX_ARGV_ITEM_BYTES);
    let bigs = vec![big.clone(); 8];
    let too_many = vec!["a".to_string(); MAX_ARGV_ITEMS + 1];
    let cases: Vec<ArgvCase> = vec![
        ("none", vec![], vec![], None),
        ("a shell line", strings(&["/bin/sh", "-c"]), strings(&["echo 'hi'\nsleep 1"]), None),
        ("empty args are fine", strings(&["python"]), strings(&["", "-u"]), None),
        ("args without a command", vec![], strings(&["--epochs", "3"]), None),
        ("64 items each", vec!["a".into(); 64], vec!["b".into(); 64], None),
        ("an item at 4 KiB", vec![big.clone()], vec![], None),
        ("32 KiB in all", bigs[..4].to_vec(), bigs[..4].to_vec(), None),
        ("65 command items", too_many.clone(), vec![], Some("invalid_command")),
        ("65 args", vec![], too_many, Some("invalid_command")),
        ("an item over 4 KiB", vec![format!("{big}x")], vec![], Some("invalid_command")),
        (
            "over 32 KiB in all",
            bigs[..4].to_vec(),
            bigs[..5].to_vec(),
            Some("invalid_command"),
        ),
        ("NUL in the command", strings(&["py\0thon"]), vec![], Some("invalid_command")),
        ("NUL in an arg", strings(&["python"]), strings(&["a\0"]), Some("invalid_command")),
        ("empty program", strings(&[""]), strings(&["x"]), Some("invalid_command")),
        ("blank program", strings(&["  "]), vec![], Some("invalid_command")),
    ];
    for (name, command, args, want) in cases {
        assert_eq!(code(check_argv(&command, &args)), want, "{name}");
        let w = Workload {
            command,
            args,
            ..Workload::of_image("python")
        };
        assert_eq!(code(check_workload(&w)), want, "{name}, through check_workload");
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(n, v)| EnvVar {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

#[test]
fn env_names_are_c_identifiers_bounded_unique_and_not_reserved() {
    let value = "v".repeat(MAX_ENV_VALUE_BYTES);
    let many: Vec<EnvVar> = (0..=MAX_ENV_VARS).map(|i| env(&[(&format!("V{i}"), "")])[0].clone()).collect();
    let full: Vec<EnvVar> = (0..8)
        .map(|i| env(&[(&format!("V{i}"), &value[..value.len() - 2])])[0].clone())
        .collect();
    let mut over = full.clone();
    over[0].value.push_str("xxx");
    let long_name = format!("A{}", "b".repeat(MAX_ENV_NAME_BYTES - 1));
    let cases: Vec<(&str, Vec<EnvVar>, Option<&str>)> = vec![
        ("none", vec![], None),
        ("usual", env(&[("HF_HOME", "/data/hf"), ("_PRIVATE", ""), ("x1", "a=b c")]), None),
        (
            "CUDA_VISIBLE_DEVICES narrows, it is allowed",
            env(&[("CUDA_VISIBLE_DEVICES", "0")]),
            None,
        ),
        ("a value at 4 KiB", env(&[("V", &value)]), None),
        ("32 KiB in all", full, None),
        ("name at 128", env(&[(&long_name, "")]), None),
        ("name over 128", env(&[(&format!("{long_name}c"), "")]), Some("invalid_env")),
        ("over 32 KiB in all", over, Some("invalid_env")),
        ("65 variables", many, Some("invalid_env")),
        ("empty name", env(&[("", "x")]), Some("invalid_env")),
        ("digit first", env(&[("1X", "x")]), Some("invalid_env")),
        ("dash", env(&[("MY-VAR", "x")]), Some("invalid_env")),
        ("equals in the name", env(&[("A=B", "x")]), Some("invalid_env")),
        ("non-ASCII name", env(&[("ÄPFEL", "x")]), Some("invalid_env")),
        ("duplicate", env(&[("A", "1"), ("B", "2"), ("A", "3")]), Some("invalid_env")),
        ("value over 4 KiB", env(&[("V", &format!("{value}x"))]), Some("invalid_env")),
        ("NUL in a value", env(&[("V", "a\0b")]), Some("invalid_env")),
        (
            "NVIDIA_VISIBLE_DEVICES",
            env(&[("NVIDIA_VISIBLE_DEVICES", "all")]),
            Some("invalid_env"),
        ),
        (
            "NVIDIA_DRIVER_CAPABILITIES",
            env(&[("NVIDIA_DRIVER_CAPABILITIES", "all")]),
            Some("invalid_env"),
        ),
        (
            "reserved in lower case",
            env(&[("nvidia_visible_devices", "all")]),
            Some("invalid_env"),
        ),
        ("the broker's own", env(&[("WORLDLAND_JOB_ID", "other")]), Some("invalid_env")),
    ];
    for (name, vars, want) in cases {
        assert_eq!(code(check_env(&vars)), want, "{name}");
    }
}

#[test]
fn the_first_part_broken_is_the_one_reported() {
    let all_bad = Workload {
        image: "Bad Image".into(),
        command: strings(&[""]),
        args: vec![],
        env: env(&[("1", "")]),
        ssh_public_key: Some("nope".into()),
    };
    let mut w = all_bad.clone();
    assert_eq!(code(check_workload(&w)), Some("invalid_image"));
    w.image = "python".into();
    assert_eq!(code(check_workload(&w)), Some("invalid_command"));
    w.command.clear();
    assert_eq!(code(check_workload(&w)), Some("invalid_env"));
    w.env.clear();
    assert_eq!(code(check_workload(&w)), Some("invalid_ssh_key"));
    w.ssh_public_key = None;
    assert_eq!(code(check_workload(&w)), None);
}

#[test]
fn the_wire_takes_the_workload_at_the_top_level_and_an_absent_image_as_empty() {
    use crate::messages::jobs::AllocateRequest;
    let old = r#"{"job_id":"j","customer_id":"c","gpus":1,"cpu_cores":1,"memory_mb":1024}"#;
    let req: AllocateRequest = serde_json::from_str(old).unwrap();
    assert_eq!(req.workload, Workload::default());
    assert_eq!(code(check_workload(&req.workload)), Some("image_missing"));
    let new = r#"{"job_id":"j","customer_id":"c","gpus":1,"cpu_cores":1,"memory_mb":1024,
        "image":"python:3.12-slim","command":["python","-c"],"args":["print(1)"],
        "env":[{"name":"A","value":"1"},{"name":"B"}],"ssh_public_key":"ssh-ed25519 AAAA"}"#;
    let req: AllocateRequest = serde_json::from_str(new).unwrap();
    assert_eq!(req.workload.image, "python:3.12-slim");
    assert_eq!(req.workload.env, env(&[("A", "1"), ("B", "")]));
    // It goes back out the same way, empty parts left out.
    let out = serde_json::to_value(&req).unwrap();
    assert_eq!(out["image"], "python:3.12-slim");
    assert_eq!(out["args"][0], "print(1)");
    let bare = serde_json::to_value(AllocateRequest {
        workload: Workload::of_image("python"),
        ..req
    })
    .unwrap();
    assert!(bare.get("command").is_none() && bare.get("env").is_none() && bare.get("ssh_public_key").is_none());
    // An env given as an object is not silently reordered or deduplicated: it does not decode.
    let object_env = r#"{"job_id":"j","customer_id":"c","gpus":1,"cpu_cores":1,"memory_mb":1024,"image":"p","env":{"A":"1"}}"#;
    assert!(serde_json::from_str::<AllocateRequest>(object_env).is_err());
}
