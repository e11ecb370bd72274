//! The agent's command line, parsed by hand: clap would double the size of
//! a binary that has to fit a root filesystem slot (Bottlerocket's updog
//! does the same).

use std::path::PathBuf;

use crate::AgentError;

pub const USAGE: &str = "usage: agent <command>

commands:
  status                       both slots, the running one, versions and trial state
  update SOURCE [--allow-downgrade] [--reboot] [--ca FILE]...
                               apply a signed bundle (a file, a block device, - for
                               stdin, or an https:// URL) to the inactive slot; it
                               boots next on trial; --reboot then asks init to reboot
                               into it; --ca trusts FILE's CA certificates (PEM)
                               for the download, besides the built-in public roots
                               and /etc/keel/ca-certificates/
  confirm                      mark the running slot good (after the health check)
  revert                       cancel a pending or running trial, or else boot the other
                               slot next on trial (only if it holds a complete image)
  run                          the boot-time daemon: confirms a slot on trial once init
                               reports the system healthy, reboots if it never does
  --version                    print the agent's version";

/// Where a bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Stdin,
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateArgs {
    pub source: Source,
    pub allow_downgrade: bool,
    pub reboot: bool,
    pub cas: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    Update(UpdateArgs),
    Confirm,
    Revert,
    Run,
    Version,
    Help,
}

fn usage(msg: String) -> AgentError {
    AgentError::Usage(format!("{msg}\n{USAGE}"))
}

pub fn parse(args: &[String]) -> Result<Command, AgentError> {
    let Some(first) = args.first() else {
        return Err(AgentError::Usage(USAGE.into()));
    };
    let rest = &args[1..];
    let none = |cmd: Command| {
        if let Some(extra) = rest.first() {
            Err(usage(format!("unexpected argument '{extra}'")))
        } else {
            Ok(cmd)
        }
    };
    match first.as_str() {
        "status" => none(Command::Status),
        "update" => parse_update(rest).map(Command::Update),
        "confirm" => none(Command::Confirm),
        "revert" => none(Command::Revert),
        "run" => none(Command::Run),
        "--version" => none(Command::Version),
        "--help" | "-h" | "help" => Ok(Command::Help),
        other => Err(usage(format!("unknown command '{other}'"))),
    }
}

fn parse_update(args: &[String]) -> Result<UpdateArgs, AgentError> {
    let mut source = None;
    let mut allow_downgrade = false;
    let mut reboot = false;
    let mut cas = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--allow-downgrade" => allow_downgrade = true,
            "--reboot" => reboot = true,
            "--ca" => cas.push(PathBuf::from(
                args.next()
                    .ok_or_else(|| usage("--ca needs a FILE".into()))?,
            )),
            s if s.starts_with("--") => return Err(usage(format!("unknown option '{s}'"))),
            s if source.is_none() => source = Some(s.to_string()),
            s => return Err(usage(format!("unexpected argument '{s}'"))),
        }
    }
    let source = source.ok_or_else(|| usage("update needs a SOURCE".into()))?;
    let source = if source == "-" {
        Source::Stdin
    } else if source.contains("://") {
        Source::Url(source)
    } else {
        Source::Path(PathBuf::from(source))
    };
    if !cas.is_empty() && !matches!(source, Source::Url(_)) {
        return Err(AgentError::Usage(
            "--ca only applies to an https:// SOURCE".into(),
        ));
    }
    Ok(UpdateArgs {
        source,
        allow_downgrade,
        reboot,
        cas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&args("status")).unwrap(), Command::Status);
        assert_eq!(
            parse(&args("update https://h/u.fw --ca /data/ca.pem --reboot")).unwrap(),
            Command::Update(UpdateArgs {
                source: Source::Url("https://h/u.fw".into()),
                allow_downgrade: false,
                reboot: true,
                cas: vec!["/data/ca.pem".into()],
            })
        );
        assert_eq!(
            parse(&args("update - --allow-downgrade")).unwrap(),
            Command::Update(UpdateArgs {
                source: Source::Stdin,
                allow_downgrade: true,
                reboot: false,
                cas: vec![],
            })
        );
    }

    #[test]
    fn refuses_bad_arguments() {
        for bad in [
            "",
            "frob",
            "status now",
            "update",
            "update a b",
            "update /dev/vdb --ca x",
            "update x --ca",
            "update x --bogus",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
