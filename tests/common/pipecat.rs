//! A Pipecat interop bot (`interop/<folder>/bot.py`) in its venv, started on loopback and
//! stopped (SIGTERM, then kill) when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Bot(Child);

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Install (or reuse) `interop/<folder>`'s venv with its `setup.sh` and start its `bot.py`
/// (`--port 0 --llm-ms 150 --reply-secs 3`); returns it with the port it printed.
pub fn start_bot(root: &Path, folder: &str) -> (Bot, u16) {
    let script = format!("interop/{folder}/setup.sh");
    let setup = Command::new("bash")
        .arg(root.join(&script))
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(setup.status.success(), "{script} failed");
    let stdout = String::from_utf8_lossy(&setup.stdout);
    let python = stdout
        .lines()
        .last()
        .expect("setup.sh prints the venv python")
        .trim();
    let mut child = Command::new(python)
        .arg(root.join(format!("interop/{folder}/bot.py")))
        .args(["--port", "0", "--llm-ms", "150", "--reply-secs", "3"])
        // onnxruntime telemetry off (bot.py forces it too; issue 17).
        .env("ORT_DISABLE_TELEMETRY", "1")
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start interop/{folder}/bot.py: {e}"));
    let out = child.stdout.take().expect("bot stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("READY port=") {
                let _ = tx.send(port.trim().parse::<u16>().ok());
            }
        }
    });
    let bot = Bot(child);
    let port = rx
        .recv_timeout(Duration::from_secs(120))
        .ok()
        .flatten()
        .expect("the bot printed READY port=N within 120 s");
    (bot, port)
}
