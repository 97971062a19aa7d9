//! Commands for headless deployments, run against the configured store:
//!
//! ```text
//! leadscore user create --username U --role viewer|editor|admin
//! ```
//! The password comes from `LEADSCORE_PASSWORD`, else from the first line of standard input,
//! so it never appears in the process list or shell history.

use super::config::Config;
use super::http::open_store;
use crate::service::accounts::{Accounts, Actor};
use std::io::BufRead;
use std::process::ExitCode;

const USAGE: &str = "usage: leadscore user create --username NAME --role viewer|editor|admin\n\
                     (password from LEADSCORE_PASSWORD or the first line of standard input)";

pub async fn run(config: Config, args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("user") if args.get(1).map(String::as_str) == Some("create") => create_user(config, &args[2..]).await,
        Some("--help") | Some("-h") | Some("help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `--name value` pairs; unknown flags are errors.
fn flags<'a>(args: &'a [String], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let name = flag.strip_prefix("--").filter(|n| known.contains(n)).ok_or(format!("unknown argument {flag:?}"))?;
        let value = it.next().ok_or(format!("--{name} needs a value"))?;
        out.push((name, value.as_str()));
    }
    Ok(out)
}

async fn create_user(config: Config, args: &[String]) -> ExitCode {
    let parsed = match flags(args, &["username", "role"]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let get = |k: &str| parsed.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    let password = match std::env::var("LEADSCORE_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() {
                eprintln!("cannot read the password from standard input");
                return ExitCode::from(2);
            }
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let store = match open_store(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open the store: {e}");
            return ExitCode::from(1);
        }
    };
    let accounts = Accounts::new(store, &[]);
    let raw = serde_json::json!({"username": get("username"), "role": get("role"), "password": password});
    match accounts.create_user(&raw, &Actor::local("command line")).await {
        Ok(user) => {
            println!("created {} ({})", user.username, user.role.as_str());
            ExitCode::SUCCESS
        }
        Err(crate::service::ServiceError::Invalid(problems)) => {
            for p in problems {
                eprintln!("{}: {}", p.field, p.problem);
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
