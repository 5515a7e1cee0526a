use std::collections::{BTreeMap, BTreeSet};

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/containerd");
const NVIDIA_BIN: &str = "/usr/bin/nvidia-container-runtime";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

/// A machine made of files, a `containerd config dump` answer, and the programs on PATH.
#[derive(Default, Clone)]
struct Machine {
    dump: Option<String>,
    files: BTreeMap<PathBuf, String>,
    on_path: BTreeSet<String>,
    executables: BTreeSet<PathBuf>,
}

impl Machine {
    /// The toolkit installed (its programs on PATH and the runtime at /usr/bin), no config yet.
    fn with_toolkit() -> Self {
        Self {
            on_path: TOOLKIT_PROGRAMS.iter().map(|p| p.to_string()).collect(),
            executables: BTreeSet::from([PathBuf::from(NVIDIA_BIN)]),
            ..Default::default()
        }
    }
    fn file(mut self, path: &str, fixture_name: &str) -> Self {
        self.files.insert(path.into(), fixture(fixture_name));
        self
    }
    fn config(self, fixture_name: &str) -> Self {
        self.file(CONTAINERD_CONFIG, fixture_name)
    }
    fn dump(mut self, fixture_name: &str) -> Self {
        self.dump = Some(fixture(fixture_name));
        self
    }
}

impl Probe for Machine {
    fn containerd_config_dump(&self) -> Option<String> {
        self.dump.clone()
    }
    fn read(&self, path: &Path) -> Option<String> {
        self.files.get(path).cloned()
    }
    fn expand(&self, pattern: &Path) -> Vec<PathBuf> {
        let wanted: Vec<char> = pattern.file_name().unwrap().to_string_lossy().chars().collect();
        self.files
            .keys()
            .filter(|f| f.parent() == pattern.parent())
            .filter(|f| glob_match(&wanted, &f.file_name().unwrap().to_string_lossy().chars().collect::<Vec<_>>()))
            .cloned()
            .collect()
    }
    fn on_path(&self, program: &str) -> bool {
        self.on_path.contains(program)
    }
    fn is_executable(&self, path: &Path) -> bool {
        self.executables.contains(path)
    }
}

/// What the check says: the default runtime and its binary, or the findings.
type Verdict = Result<(String, String), Vec<Finding>>;

fn findings(m: &Machine) -> Vec<Finding> {
    assess(m).expect_err("not ready").findings
}

fn not_default(default: &str) -> Finding {
    Finding::NotDefault {
        default: default.into(),
        nvidia: vec!["nvidia".into()],
    }
}

#[test]
fn sample_configs() {
    let ok = |runtime: &str| Ok((runtime.to_string(), NVIDIA_BIN.to_string()));
    let no_nvidia = |default: &str| Err(vec![Finding::NoNvidiaRuntime { default: default.into() }]);
    let table: Vec<(&str, Verdict)> = vec![
        ("v2-nvidia-default.toml", ok("nvidia")),
        ("v3-nvidia-default.toml", ok("nvidia")),
        ("v1-nvidia-default.toml", ok("nvidia")),
        ("v2-runc-only.toml", no_nvidia("runc")),
        ("v2-nvidia-not-default.toml", Err(vec![not_default("runc")])),
        // containerd 2.x reads runtimes from the version 3 table only.
        ("v3-stale-v2-section.toml", no_nvidia("runc")),
        // A runtime named "nvidia" that runs runc gives no GPU.
        ("nvidia-named-but-runc.toml", no_nvidia("nvidia")),
        ("default-undefined.toml", no_nvidia("nvidia")),
        // The main file alone, its drop-in absent: runc.
        ("main-with-imports.toml", no_nvidia("runc")),
    ];
    for (name, want) in table {
        let m = Machine::with_toolkit().config(name);
        let got = assess(&m).map(|r| (r.runtime, r.binary)).map_err(|e| e.findings);
        assert_eq!(got, want, "{name}");
        // The same text from `containerd config dump` reads the same (and is preferred).
        let dumped = Machine::with_toolkit().dump(name).config("v2-runc-only.toml");
        let got = assess(&dumped).map(|r| (r.runtime, r.binary)).map_err(|e| e.findings);
        assert_eq!(got, want, "{name}, dumped");
    }
}

#[test]
fn the_toolkits_drop_in_is_read_through_the_main_files_imports() {
    let m = Machine::with_toolkit()
        .config("main-with-imports.toml")
        .file("/etc/containerd/conf.d/99-nvidia.toml", "dropin-99-nvidia.toml")
        .file("/etc/containerd/conf.d/README", "broken.toml");
    let ready = assess(&m).unwrap();
    assert_eq!((ready.runtime.as_str(), ready.binary.as_str()), ("nvidia", NVIDIA_BIN));
    assert_eq!(ready.source, "/etc/containerd/config.toml and the 1 file(s) it imports");
}

#[test]
fn containerds_own_dump_wins_over_the_files() {
    // The file says nvidia, but containerd (an import overriding it, say) runs runc.
    let m = Machine::with_toolkit()
        .config("v2-nvidia-default.toml")
        .dump("v2-nvidia-not-default.toml");
    let e = assess(&m).unwrap_err();
    assert_eq!(e.findings, vec![not_default("runc")]);
    assert_eq!(e.source.as_deref(), Some("`containerd config dump`"));
}

#[test]
fn relative_imports_are_relative_to_the_importing_file() {
    assert_eq!(
        resolve_import(Path::new("/etc/containerd/config.toml"), "conf.d/*.toml"),
        PathBuf::from("/etc/containerd/conf.d/*.toml")
    );
    assert_eq!(
        resolve_import(Path::new("/etc/containerd/config.toml"), "/opt/x.toml"),
        PathBuf::from("/opt/x.toml")
    );
    let mut main = fixture("main-with-imports.toml");
    main = main.replace("/etc/containerd/conf.d/*.toml", "conf.d/*.toml");
    let mut m = Machine::with_toolkit().file("/etc/containerd/conf.d/99-nvidia.toml", "dropin-99-nvidia.toml");
    m.files.insert(CONTAINERD_CONFIG.into(), main);
    assert!(assess(&m).is_ok());
}

#[test]
fn a_missing_toolkit_is_named_with_the_commands_that_install_it() {
    let mut m = Machine::with_toolkit().config("v2-runc-only.toml");
    m.on_path.clear();
    let e = assess(&m).unwrap_err();
    assert_eq!(
        e.findings,
        vec![
            Finding::ToolkitMissing(vec![NVIDIA_RUNTIME.into(), "nvidia-ctk".into()]),
            Finding::NoNvidiaRuntime { default: "runc".into() }
        ]
    );
    let text = e.to_string();
    for c in APT_INSTALL.iter().chain(CONFIGURE.iter()) {
        assert!(text.contains(c), "{c}\n{text}");
    }
    assert!(text.contains("not on PATH: nvidia-container-runtime, nvidia-ctk"), "{text}");
    assert!(text.contains(INSTALL_GUIDE));
    assert!(text.contains("containerd's configuration as read from /etc/containerd/config.toml"));
    // Install first, configure after.
    assert!(text.find("apt-get install").unwrap() < text.find("nvidia-ctk runtime configure").unwrap());
}

#[test]
fn a_configured_machine_is_told_only_to_set_the_default() {
    let e = assess(&Machine::with_toolkit().config("v2-nvidia-not-default.toml")).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("sudo nvidia-ctk runtime configure --runtime=containerd --set-as-default"));
    assert!(text.contains("sudo systemctl restart containerd"));
    assert!(!text.contains("apt-get"), "the toolkit is there: {text}");
    assert!(text.contains("its default runtime is \"runc\""), "{text}");
}

#[test]
fn no_configuration_at_all() {
    let e = assess(&Machine::with_toolkit()).unwrap_err();
    assert_eq!(e.findings, vec![Finding::NoContainerdConfig]);
    assert_eq!(e.source, None);
    let text = e.to_string();
    assert!(text.contains(CONTAINERD_DEFAULTS), "{text}");
    assert!(text.find(CONTAINERD_DEFAULTS).unwrap() < text.find("--set-as-default").unwrap());
}

#[test]
fn a_runtime_binary_that_is_not_there() {
    let mut m = Machine::with_toolkit().config("v2-nvidia-default.toml");
    m.executables.clear();
    assert_eq!(findings(&m), vec![Finding::BinaryMissing { path: NVIDIA_BIN.into() }]);
    assert!(assess(&m)
        .unwrap_err()
        .to_string()
        .contains("apt-get install -y nvidia-container-toolkit"));
}

#[test]
fn a_file_that_does_not_parse_is_named_and_nothing_else_guessed() {
    let e = assess(&Machine::with_toolkit().config("broken.toml")).unwrap_err();
    assert_eq!(e.findings.len(), 1, "{:?}", e.findings);
    assert!(
        matches!(&e.findings[0], Finding::Unreadable { source, .. } if source == CONTAINERD_CONFIG),
        "{:?}",
        e.findings
    );
    let imported = Machine::with_toolkit()
        .config("v2-nvidia-default.toml")
        .file("/etc/containerd/conf.d/99-nvidia.toml", "broken.toml");
    let mut with_import = imported.clone();
    let main = fixture("v2-nvidia-default.toml").replace("version = 2", "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]");
    with_import.files.insert(CONTAINERD_CONFIG.into(), main);
    let e = assess(&with_import).unwrap_err();
    assert!(
        matches!(&e.findings[..], [Finding::Unreadable { source, .. }] if source == "/etc/containerd/conf.d/99-nvidia.toml"),
        "{:?}",
        e.findings
    );
}

#[test]
fn parse_reads_defaults_runtimes_and_imports() {
    let c = parse_config(&fixture("v2-nvidia-default.toml")).unwrap();
    assert_eq!(c.default_runtime.as_deref(), Some("nvidia"));
    assert_eq!(
        c.runtimes,
        BTreeMap::from([("nvidia".into(), Some(NVIDIA_BIN.into())), ("runc".into(), None)])
    );
    let c = parse_config(&fixture("main-with-imports.toml")).unwrap();
    assert_eq!(c.imports, ["/etc/containerd/conf.d/*.toml"]);
    // An empty BinaryName is runc's own binary.
    let c = parse_config(&fixture("v2-runc-only.toml")).unwrap();
    assert_eq!(c.runtimes, BTreeMap::from([("runc".into(), None)]));
    assert_eq!(parse_config("").unwrap(), CriSettings::default());
}

#[test]
fn later_files_override_earlier_ones() {
    let a = parse_config(&fixture("v2-runc-only.toml")).unwrap();
    let b = parse_config(&fixture("dropin-99-nvidia.toml")).unwrap();
    assert_eq!(merge(&[a.clone(), b.clone()]).default_runtime, "nvidia");
    assert_eq!(merge(&[b, a]).default_runtime, "runc");
    assert_eq!(merge(&[]).default_runtime, "runc", "containerd's own default");
}

#[test]
fn globs() {
    let m = |p: &str, n: &str| glob_match(&p.chars().collect::<Vec<_>>(), &n.chars().collect::<Vec<_>>());
    assert!(m("*.toml", "99-nvidia.toml"));
    assert!(m("*.toml", ".toml"));
    assert!(!m("*.toml", "99-nvidia.toml.bak"));
    assert!(m("9?-*.toml", "99-nvidia.toml"));
    assert!(!m("9?-*.toml", "9-nvidia.toml"));
    assert!(m("config.toml", "config.toml"));
    assert!(!m("config.toml", "config.tom"));
}

/// The machine's probe: globs in the last component, executables, PATH.
#[test]
fn the_system_probe_reads_the_machine() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("wl-gpu-runtime-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    for f in ["conf.d/99-nvidia.toml", "conf.d/10-registry.toml", "conf.d/notes.txt"] {
        std::fs::write(dir.join(f), "version = 2\n").unwrap();
    }
    let exe = dir.join(NVIDIA_RUNTIME);
    std::fs::write(&exe, "#!/bin/sh\n").unwrap();
    let p = SystemProbe;
    assert_eq!(
        p.expand(&dir.join("conf.d/*.toml")),
        vec![dir.join("conf.d/10-registry.toml"), dir.join("conf.d/99-nvidia.toml")]
    );
    assert_eq!(p.expand(&dir.join("conf.d/notes.txt")), vec![dir.join("conf.d/notes.txt")]);
    assert!(p.expand(&dir.join("absent/*.toml")).is_empty());
    assert!(!p.is_executable(&exe), "mode 0644");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(p.is_executable(&exe));
    assert!(!p.is_executable(&dir), "a directory");
    assert!(p.on_path("sh"));
    assert!(!p.on_path("surely-no-such-program-here"));
    assert_eq!(p.read(&dir.join("conf.d/99-nvidia.toml")).as_deref(), Some("version = 2\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}
