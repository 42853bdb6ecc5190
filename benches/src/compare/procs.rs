//! Server processes started for a comparison: killed, and their data
//! removed, however the run ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Processes of one system under test, and the directory they write to.
pub struct Servers {
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Servers {
    /// A fresh data directory `name` under the system's temp dir.
    pub fn new(name: &str) -> Result<Servers, String> {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Servers {
            dir,
            children: Vec::new(),
        })
    }

    /// Starts `cmd` with its output in `<dir>/<label>.log`.
    pub fn spawn(&mut self, label: &str, mut cmd: Command) -> Result<(), String> {
        let log = self.dir.join(format!("{label}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {label} ({:?}): {e}", cmd.get_program()))?;
        self.children.push((label.to_string(), child));
        Ok(())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }

    /// Fails naming the first process that has exited, with its log's tail.
    pub fn check_running(&mut self) -> Result<(), String> {
        for (label, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = tail(&self.dir.join(format!("{label}.log")));
                return Err(format!("{label} exited ({status}):\n{log}"));
            }
        }
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
