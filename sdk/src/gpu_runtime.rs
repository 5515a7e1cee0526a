//! Whether containerd on this machine can give containers its GPUs: `install` checks it before
//! registering, and refuses with what to install and the exact commands when it cannot.
//!
//! The NVIDIA device plugin (`infra/k8s/base/nvidia-device-plugin.yaml`) runs on the provider's
//! node and advertises `nvidia.com/gpu` only if its own container sees the driver, and a rental
//! that is allocated GPUs gets them only through the NVIDIA container runtime. Both pods name no
//! RuntimeClass, so the runtime must be **containerd's default**: the default runtime
//! (`default_runtime_name`, `runc` when unset) must run the binary `nvidia-container-runtime`
//! (`options.BinaryName`). That runtime is a thin layer over runc that adds GPUs only to a
//! container that asks for them, so the node's other pods run as before. (A RuntimeClass
//! `nvidia` instead would need every GPU pod, the plugin's included, to name it; NVIDIA's own
//! quick start sets the default, and so do we.)
//!
//! The check is pure over what a [`Probe`] reads — the effective config from `containerd config
//! dump` where containerd can say it, else `/etc/containerd/config.toml` and the files its
//! `imports` name (where the toolkit's drop-in goes since v1.18), and which programs are on PATH
//! — so the tests run it over sample files ([`SystemProbe`] is the machine's). The SDK never
//! changes the machine's configuration itself: it says what to run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// containerd's main configuration file.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// The NVIDIA container runtime's file name; containerd's default runtime must run it.
pub const NVIDIA_RUNTIME: &str = "nvidia-container-runtime";
/// The toolkit's programs that must be on PATH: the runtime, and the tool that configures it.
pub const TOOLKIT_PROGRAMS: [&str; 2] = [NVIDIA_RUNTIME, "nvidia-ctk"];
/// How deep `imports` may nest (containerd itself follows them a level or two).
const MAX_IMPORT_DEPTH: usize = 4;

/// What the check reads from the machine.
pub trait Probe {
    /// containerd's effective configuration, its imports merged (`containerd config dump`);
    /// `None` when containerd cannot say (not installed, or its config does not load).
    fn containerd_config_dump(&self) -> Option<String>;
    /// A file's text; `None` when it is absent or unreadable.
    fn read(&self, path: &Path) -> Option<String>;
    /// The files an `imports` entry names, in containerd's order: a `*` or `?` in its last
    /// component is a glob, matched in lexical order.
    fn expand(&self, pattern: &Path) -> Vec<PathBuf>;
    /// Whether `program` is an executable file in a directory of PATH.
    fn on_path(&self, program: &str) -> bool;
    /// Whether `path` is an executable file.
    fn is_executable(&self, path: &Path) -> bool;
}

/// The CRI runtime settings one containerd config file sets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CriSettings {
    /// `default_runtime_name`, when the file sets it.
    pub default_runtime: Option<String>,
    /// Each runtime the file defines, with its `options.BinaryName` (`None`: runc's own).
    pub runtimes: BTreeMap<String, Option<String>>,
    /// The file's `imports`, as written.
    pub imports: Vec<String>,
}

/// The tables under `plugins` whose `containerd` table holds the CRI runtimes, by the file's
/// `version`: 3 (containerd 2.x), 2 (containerd 1.x), 1 or none (short names, or anything).
fn cri_plugins(version: Option<i64>) -> &'static [&'static str] {
    match version {
        Some(3..) => &["io.containerd.cri.v1.runtime"],
        Some(2) => &["io.containerd.grpc.v1.cri"],
        _ => &["cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"],
    }
}

/// Parses one containerd config file (any version) for its CRI runtime settings.
pub fn parse_config(text: &str) -> Result<CriSettings, String> {
    let doc: Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let imports = doc
        .get("imports")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let mut out = CriSettings {
        imports,
        ..Default::default()
    };
    let plugins = doc.get("plugins").and_then(Value::as_table);
    for name in cri_plugins(doc.get("version").and_then(Value::as_integer)) {
        let Some(containerd) = plugins
            .and_then(|p| p.get(*name))
            .and_then(|c| c.get("containerd"))
            .and_then(Value::as_table)
        else {
            continue;
        };
        if let Some(d) = containerd.get("default_runtime_name").and_then(Value::as_str) {
            out.default_runtime = Some(d.to_string());
        }
        for (runtime, spec) in containerd.get("runtimes").and_then(Value::as_table).into_iter().flatten() {
            let binary = spec
                .get("options")
                .and_then(|o| o.get("BinaryName"))
                .and_then(Value::as_str)
                .filter(|b| !b.is_empty())
                .map(str::to_string);
            out.runtimes.insert(runtime.clone(), binary);
        }
    }
    Ok(out)
}

/// An `imports` entry as containerd reads it: a relative path is relative to the directory of
/// the file that names it.
pub fn resolve_import(importing_file: &Path, entry: &str) -> PathBuf {
    let p = Path::new(entry);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        importing_file.parent().unwrap_or(Path::new("/")).join(p)
    }
}

/// containerd's runtime settings after every file: each later file's default and runtimes
/// override the earlier ones'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub default_runtime: String,
    pub runtimes: BTreeMap<String, Option<String>>,
}

pub fn merge(files: &[CriSettings]) -> Effective {
    let mut out = Effective {
        default_runtime: "runc".into(),
        runtimes: BTreeMap::new(),
    };
    for f in files {
        if let Some(d) = &f.default_runtime {
            out.default_runtime = d.clone();
        }
        out.runtimes.extend(f.runtimes.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

/// Whether a runtime's binary is the NVIDIA container runtime.
fn is_nvidia(binary: &Option<String>) -> bool {
    binary
        .as_deref()
        .and_then(|b| Path::new(b).file_name())
        .is_some_and(|n| n == NVIDIA_RUNTIME)
}

/// What is wrong, one item each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// These toolkit programs are not on PATH.
    ToolkitMissing(Vec<String>),
    /// containerd has no configuration to read: not installed, or never configured.
    NoContainerdConfig,
    /// A configuration file that does not parse.
    Unreadable { source: String, error: String },
    /// containerd's default runtime is not the NVIDIA runtime, and no runtime is.
    NoNvidiaRuntime { default: String },
    /// The NVIDIA runtime is configured under these names, but the default is another.
    NotDefault { default: String, nvidia: Vec<String> },
    /// The default runtime names the NVIDIA runtime at a path that is no executable.
    BinaryMissing { path: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ToolkitMissing(p) => write!(f, "not on PATH: {} (the NVIDIA Container Toolkit)", p.join(", ")),
            Self::NoContainerdConfig => write!(
                f,
                "containerd has no configuration: `containerd config dump` gave none and {CONTAINERD_CONFIG} does not exist"
            ),
            Self::Unreadable { source, error } => write!(f, "{source} does not parse: {error}"),
            Self::NoNvidiaRuntime { default } => write!(
                f,
                "containerd's default runtime is {default:?}, and no runtime runs {NVIDIA_RUNTIME}"
            ),
            Self::NotDefault { default, nvidia } => write!(
                f,
                "containerd has the NVIDIA runtime ({}) but its default runtime is {default:?}: pods that name no RuntimeClass (the device plugin's, the rentals') would not get GPUs",
                nvidia.join(", ")
            ),
            Self::BinaryMissing { path } => write!(f, "containerd's default runtime runs {path}, which is not an executable file"),
        }
    }
}

/// containerd runs the NVIDIA runtime by default: where that was read, and the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub source: String,
    pub runtime: String,
    pub binary: String,
}

/// Why containerd cannot give containers GPUs, and where its configuration was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub source: Option<String>,
    pub findings: Vec<Finding>,
}

/// The files containerd reads, in its order: `file`, then what its imports name (depth first).
fn read_with_imports(probe: &dyn Probe, file: &Path, depth: usize, out: &mut Vec<(String, String)>) {
    let Some(text) = probe.read(file) else { return };
    let imports = parse_config(&text).map(|c| c.imports).unwrap_or_default();
    out.push((file.display().to_string(), text));
    if depth >= MAX_IMPORT_DEPTH {
        return;
    }
    for entry in imports {
        for f in probe.expand(&resolve_import(file, &entry)) {
            read_with_imports(probe, &f, depth + 1, out);
        }
    }
}

/// containerd's configuration texts (source name, text) and where they came from.
fn config_texts(probe: &dyn Probe) -> Option<(String, Vec<(String, String)>)> {
    if let Some(dump) = probe.containerd_config_dump() {
        let source = "`containerd config dump`".to_string();
        return Some((source.clone(), vec![(source, dump)]));
    }
    let mut files = vec![];
    read_with_imports(probe, Path::new(CONTAINERD_CONFIG), 0, &mut files);
    let source = match files.len() {
        0 => return None,
        1 => CONTAINERD_CONFIG.to_string(),
        n => format!("{CONTAINERD_CONFIG} and the {} file(s) it imports", n - 1),
    };
    Some((source, files))
}

/// The default runtime's binary when it is the NVIDIA runtime, installed; what it lacks if not.
fn default_runtime_binary(probe: &dyn Probe, e: &Effective) -> Result<String, Finding> {
    let binary = e.runtimes.get(&e.default_runtime).cloned().flatten();
    if is_nvidia(&binary) {
        let path = binary.unwrap_or_default();
        return match probe.is_executable(Path::new(&path)) {
            true => Ok(path),
            false => Err(Finding::BinaryMissing { path }),
        };
    }
    let nvidia: Vec<String> = e.runtimes.iter().filter(|(_, b)| is_nvidia(b)).map(|(n, _)| n.clone()).collect();
    let default = e.default_runtime.clone();
    Err(if nvidia.is_empty() {
        Finding::NoNvidiaRuntime { default }
    } else {
        Finding::NotDefault { default, nvidia }
    })
}

/// The check: every finding at once, so one round of fixes is enough.
pub fn assess(probe: &dyn Probe) -> Result<Ready, NotReady> {
    let mut findings = vec![];
    let missing: Vec<String> = TOOLKIT_PROGRAMS
        .iter()
        .filter(|p| !probe.on_path(p))
        .map(|p| p.to_string())
        .collect();
    if !missing.is_empty() {
        findings.push(Finding::ToolkitMissing(missing));
    }
    let Some((source, texts)) = config_texts(probe) else {
        findings.push(Finding::NoContainerdConfig);
        return Err(NotReady { source: None, findings });
    };
    let mut parsed = vec![];
    for (name, text) in &texts {
        match parse_config(text) {
            Ok(c) => parsed.push(c),
            Err(error) => findings.push(Finding::Unreadable {
                source: name.clone(),
                error: error.trim().to_string(),
            }),
        }
    }
    let unreadable = parsed.len() < texts.len();
    let effective = merge(&parsed);
    let binary = match default_runtime_binary(probe, &effective) {
        // What a file that does not parse would have set is unknown: its error alone is reported.
        Err(_) if unreadable => None,
        Err(f) => {
            findings.push(f);
            None
        }
        Ok(b) => Some(b),
    };
    match binary {
        Some(binary) if findings.is_empty() => Ok(Ready {
            source,
            runtime: effective.default_runtime,
            binary,
        }),
        _ => Err(NotReady {
            source: Some(source),
            findings,
        }),
    }
}

/// NVIDIA's install guide, for the other distributions' commands.
pub const INSTALL_GUIDE: &str = "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html";
/// NVIDIA's apt repository and the toolkit's package (Debian and Ubuntu).
pub const APT_INSTALL: [&str; 3] = [
    "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | sudo gpg --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg",
    "curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' | sudo tee /etc/apt/sources.list.d/nvidia-container-toolkit.list",
    "sudo apt-get update && sudo apt-get install -y nvidia-container-toolkit",
];
/// containerd's own defaults, when it has no configuration file yet.
pub const CONTAINERD_DEFAULTS: &str = "containerd config default | sudo tee /etc/containerd/config.toml";
/// Makes the NVIDIA runtime containerd's default, then restarts containerd to load it.
pub const CONFIGURE: [&str; 2] = [
    "sudo nvidia-ctk runtime configure --runtime=containerd --set-as-default",
    "sudo systemctl restart containerd",
];

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "containerd on this machine cannot give containers its GPUs, so the NVIDIA device plugin on its node would advertise none and no rental could use them:"
        )?;
        for finding in &self.findings {
            writeln!(f, "  - {finding}")?;
        }
        if let Some(source) = &self.source {
            writeln!(f, "  (containerd's configuration as read from {source})")?;
        }
        let mut step = 0;
        let mut next = |f: &mut fmt::Formatter<'_>, what: &str| -> fmt::Result {
            step += 1;
            writeln!(f, "{step}. {what}")
        };
        writeln!(f, "To fix it:")?;
        let toolkit_gone = self
            .findings
            .iter()
            .any(|x| matches!(x, Finding::ToolkitMissing(_) | Finding::BinaryMissing { .. }));
        if toolkit_gone {
            next(
                f,
                &format!("install the NVIDIA Container Toolkit ({INSTALL_GUIDE}); on Debian or Ubuntu:"),
            )?;
            for c in APT_INSTALL {
                writeln!(f, "     {c}")?;
            }
        }
        if self.findings.contains(&Finding::NoContainerdConfig) {
            next(
                f,
                "if containerd is installed but has no configuration file, write its defaults first:",
            )?;
            writeln!(f, "     {CONTAINERD_DEFAULTS}")?;
        }
        next(f, "make the NVIDIA runtime containerd's default runtime, and restart containerd:")?;
        for c in CONFIGURE {
            writeln!(f, "     {c}")?;
        }
        write!(f, "then run `worldland-provider-sdk install` again.")
    }
}

impl std::error::Error for NotReady {}

/// The machine itself.
pub struct SystemProbe;

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` any one.
fn glob_match(pattern: &[char], name: &[char]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some('*'), _) => glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..])),
        (Some('?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

impl Probe for SystemProbe {
    fn containerd_config_dump(&self) -> Option<String> {
        if !self.on_path("containerd") {
            return None;
        }
        let out = std::process::Command::new("containerd").args(["config", "dump"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn expand(&self, pattern: &Path) -> Vec<PathBuf> {
        let name = pattern.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.contains(['*', '?']) {
            return vec![pattern.to_path_buf()];
        }
        let dir = pattern.parent().unwrap_or(Path::new("/"));
        let wanted: Vec<char> = name.chars().collect();
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| glob_match(&wanted, &e.file_name().to_string_lossy().chars().collect::<Vec<_>>()))
            .map(|e| e.path())
            .collect();
        found.sort();
        found
    }

    fn on_path(&self, program: &str) -> bool {
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| self.is_executable(&d.join(program))))
    }

    fn is_executable(&self, path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
}

#[cfg(test)]
mod tests;
