//! Passwords for encrypted private keys: typed at a terminal without echo, or read
//! as one line from standard input when it is not a terminal (scripts, tests).

use std::io::{BufRead, IsTerminal, Write};

use zeroize::Zeroizing;

/// Reads a password, prompting with `prompt` on standard error at a terminal.
pub fn read(prompt: &str) -> Result<Zeroizing<String>, String> {
    let stdin = std::io::stdin();
    let mut line = Zeroizing::new(String::new());
    if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let _echo = EchoOff::new(&stdin);
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        eprintln!();
    } else {
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    }
    let password = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(password)
}

/// Turns terminal echo off while alive.
struct EchoOff<'a> {
    stdin: &'a std::io::Stdin,
    saved: Option<rustix::termios::Termios>,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> Self {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(stdin).ok();
        if let Some(saved) = &saved {
            let mut quiet = saved.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            let _ = tcsetattr(stdin, OptionalActions::Now, &quiet);
        }
        Self { stdin, saved }
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(self.stdin, rustix::termios::OptionalActions::Now, saved);
        }
    }
}
