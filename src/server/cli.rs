//! Commands for headless deployments, run against the configured store:
//!
//! ```text
//! leadscore user create --username U --role viewer|editor|admin
//! leadscore backup --to FILE                 (embedded store; safe while the server runs)
//! leadscore restore --from FILE [--force]    (refused while a server uses the store)
//! ```
//! The password comes from `LEADSCORE_PASSWORD`, else from the first line of standard input,
//! so it never appears in the process list or shell history.

use super::config::{Config, Database};
use super::http::open_store;
use crate::service::accounts::{Accounts, Actor};
use crate::service::store::sqlite::backup;
use std::io::BufRead;
use std::process::ExitCode;

const USAGE: &str = "usage: leadscore user create --username NAME --role viewer|editor|admin\n\
                     (password from LEADSCORE_PASSWORD or the first line of standard input)\n\
                     \x20      leadscore backup --to FILE\n\
                     \x20      leadscore restore --from FILE [--force]";

pub async fn run(config: Config, args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("user") if args.get(1).map(String::as_str) == Some("create") => create_user(config, &args[2..]).await,
        Some("backup") => copy_command(&config, &args[1..], Copy::Backup),
        Some("restore") => copy_command(&config, &args[1..], Copy::Restore),
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

enum Copy {
    Backup,
    Restore,
}

/// `backup --to FILE` / `restore --from FILE [--force]` on the embedded store.
fn copy_command(config: &Config, args: &[String], which: Copy) -> ExitCode {
    let Database::Sqlite(db) = &config.database else {
        eprintln!("backup and restore are for the embedded store; for MongoDB use mongodump/mongorestore or your Atlas backups");
        return ExitCode::from(2);
    };
    let force = args.iter().any(|a| a == "--force");
    let rest: Vec<String> = args.iter().filter(|a| *a != "--force").cloned().collect();
    let flag = match which {
        Copy::Backup => "to",
        Copy::Restore => "from",
    };
    let file = match flags(&rest, &[flag]) {
        Ok(p) if p.len() == 1 => std::path::PathBuf::from(p[0].1),
        Ok(_) => {
            eprintln!("--{flag} FILE is required\n{USAGE}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = match which {
        Copy::Backup => {
            backup::backup(db, &file).map(|c| (c, format!("backed up {} to {}", db.display(), file.display())))
        }
        Copy::Restore => {
            backup::restore(&file, db, force).map(|c| (c, format!("restored {} from {}", db.display(), file.display())))
        }
    };
    match outcome {
        Ok((copied, what)) => {
            println!("{what}: {} events, {} leads, {} bytes", copied.events, copied.leads, copied.bytes);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
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
