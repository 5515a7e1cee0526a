use super::*;

fn cmd(kind: &str) -> MiningCommand {
    MiningCommand {
        kind: kind.into(),
        command_id: "job-1/stop".into(),
        job_id: "job-1".into(),
        gpu_model: "RTX-4090".into(),
        gpus: 2,
    }
}

#[test]
fn commands_are_told_from_answers_and_rendered_without_a_shell() {
    assert_eq!(
        parse_command(&serde_json::to_vec(&cmd("mining.stop")).unwrap()),
        Some(cmd("mining.stop"))
    );
    assert_eq!(parse_command(br#"{"success":true,"status":"approved","message":"x"}"#), None);
    assert_eq!(parse_command(&serde_json::to_vec(&cmd("rm -rf")).unwrap()), None);
    assert_eq!(
        render("miner-ctl stop --gpus {gpus} --model {model}; {job_id}", &cmd("mining.stop")),
        vec!["miner-ctl", "stop", "--gpus", "2", "--model", "RTX-4090;", "job-1"]
    );
}

#[tokio::test]
async fn dry_run_and_unconfigured_commands_run_nothing() {
    let dry = MiningSettings {
        stop_cmd: Some("false".into()),
        resume_cmd: None,
        dry_run: true,
        machine_gpus: 4,
        ..Default::default()
    };
    assert_eq!(obey(&cmd("mining.stop"), &dry).await, (true, "dry run: false".into()));
    assert!(obey(&cmd("mining.resume"), &dry).await.1.contains("no command configured"));
    let real = MiningSettings {
        stop_cmd: Some("false".into()),
        resume_cmd: Some("true".into()),
        dry_run: false,
        machine_gpus: 4,
        ..Default::default()
    };
    assert!(!obey(&cmd("mining.stop"), &real).await.0, "a failing command is reported");
    assert!(obey(&cmd("mining.resume"), &real).await.0);
}

#[tokio::test]
async fn commands_for_gpus_this_machine_lacks_or_of_odd_shape_run_nothing() {
    let marker = std::env::temp_dir().join(format!("wl-mining-{}", uuid::Uuid::new_v4().simple()));
    let s = MiningSettings {
        resume_cmd: Some(format!("touch {}", marker.display())),
        machine_gpus: 2,
        ..Default::default()
    };
    let with = |f: &dyn Fn(&mut MiningCommand)| {
        let mut c = cmd("mining.resume");
        f(&mut c);
        c
    };
    for bad in [
        with(&|c| c.gpus = 3),
        with(&|c| c.gpus = 0),
        with(&|c| c.job_id = "job;rm -rf /".into()),
        with(&|c| c.job_id = "../../etc".into()),
        with(&|c| c.gpu_model = "--config=/tmp/evil".into()),
        with(&|c| c.gpu_model = String::new()),
    ] {
        let (ok, detail) = obey(&bad, &s).await;
        assert!(!ok && detail.starts_with("refused"), "{bad:?}: {detail}");
        assert!(!marker.exists(), "{bad:?} ran the command");
    }
    assert!(obey(&cmd("mining.resume"), &s).await.0);
    assert!(marker.exists(), "a good command runs");
    std::fs::remove_file(marker).unwrap();
}
