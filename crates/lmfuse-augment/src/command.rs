//! Paraphrases from a command of the user's (a back-translation system, a paraphraser): texts
//! on its standard input, one a line, and one paraphrase a line on its standard output.

use crate::AugmentError;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// Runs `command` (through `sh -c`) on `texts`, one a line (line breaks inside a text become
/// spaces); its paraphrases, one per text (`None` for an empty answer line). The command must
/// exit with status 0 and answer exactly one line per text.
pub fn paraphrase_with(
    command: &str,
    texts: &[String],
) -> Result<Vec<Option<String>>, AugmentError> {
    let failed = |message: String| AugmentError::Command {
        command: command.to_string(),
        message,
    };
    let mut child = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot start: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input: String = texts
        .iter()
        .map(|t| t.replace(['\n', '\r'], " ") + "\n")
        .collect();
    // Written from its own thread: a command that answers as it reads would otherwise fill
    // its output pipe while we still write.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut answers = Vec::with_capacity(texts.len());
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| failed(format!("its output is not UTF-8 text: {e}")))?;
        let line = line.trim();
        answers.push((!line.is_empty()).then(|| line.to_string()));
    }
    let written = writer.join().expect("the writer thread does not panic");
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!("{} ({})", output.status, stderr.trim())));
    }
    written.map_err(|e| failed(format!("cannot write the texts to it: {e}")))?;
    if answers.len() != texts.len() {
        return Err(failed(format!(
            "answered {} lines for {} texts (one line per text, empty for none)",
            answers.len(),
            texts.len()
        )));
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_answer_per_text_and_empty_lines_are_none() {
        let got = paraphrase_with(
            "sed 's/good/fine/; s/^skip$//'",
            &texts(&["a good day", "skip", "two\nlines"]),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                Some("a fine day".to_string()),
                None,
                Some("two lines".to_string())
            ]
        );
    }

    #[test]
    fn a_failing_or_out_of_step_command_is_named() {
        for (command, needle) in [
            ("exit 3", "exit status: 3"),
            ("head -n 1", "answered 1 lines for 2 texts"),
            ("echo oops >&2; false", "oops"),
        ] {
            let e = paraphrase_with(command, &texts(&["a", "b"]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(command) && e.contains(needle), "{command}: {e}");
        }
    }
}
