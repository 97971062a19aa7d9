//! The real server binary as a child process on a given database, with its log collected.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Binary {
    pub child: Child,
    /// `http://127.0.0.1:<port>`, as the server logged it.
    pub base: String,
    /// Every line it printed (stdout and stderr), as it printed them.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts the binary on the SQLite file `db` with `env` on top of a clean environment
    /// (no `API_KEYS`, no `AUTH`), and waits (bounded) until it listens.
    pub fn start(db: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_on(&format!("sqlite://{}", db.display()), env)
    }

    /// Like `start`, on any `DATABASE_URL` (a MongoDB URI, say).
    pub fn start_on(database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_leadscore"));
        command
            .env("DATABASE_URL", database_url)
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("LEPTOS_OUTPUT_NAME", "leadscore")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env_remove("API_KEYS")
            .env_remove("AUTH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start server binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let streams: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for stream in streams {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut binary = Binary { child, base: String::new(), log };
        let line = binary.wait_for_line("listening on http://", Duration::from_secs(60));
        binary.base = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        binary
    }

    /// Waits until the log has a line containing `needle`; panics after `timeout`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no log line with {needle:?}: {:?}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
