//! Shell habits: completion scripts, manual pages and `--help` with examples, from the real
//! binary, checked against the shells' and man's own tools where the machine has them.

use crate::common::*;

#[tokio::test]
async fn completion_scripts_know_every_command_and_flag() {
    for (shell, marker) in [
        ("bash", "_apitap()"),
        ("zsh", "#compdef apitap"),
        ("fish", "complete -c apitap"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let run = apitap(&["completions", shell], None).await;
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(run.stdout.contains(marker), "{shell}:\n{}", run.stdout);
        for flag in ["distribute-by", "preview", "copy-streams", "records-path"] {
            assert!(run.stdout.contains(flag), "{shell} lacks --{flag}");
        }
    }
    // bash itself reads the script and then knows the function.
    let run = apitap(&["completions", "bash"], None).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("apitap.bash");
    std::fs::write(&script, &run.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && declare -F _apitap", script.display()))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&check.stdout), "_apitap\n");

    let run = apitap(&["completions", "tcsh"], None).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("invalid value 'tcsh'"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn manual_pages_cover_each_command() {
    let run = apitap(&["man"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(".TH apitap 1"), "{}", run.stdout);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let run = apitap(&["man", "--out", out.to_str().unwrap()], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let load = std::fs::read_to_string(out.join("apitap-load.1")).unwrap();
    assert!(load.contains("\\-\\-preview"), "{load}");
    assert!(load.contains("apitap load ./users.json"), "{load}");
    for page in [
        "apitap.1",
        "apitap-run.1",
        "apitap-check.1",
        "apitap-completions.1",
    ] {
        assert!(out.join(page).exists(), "{page} missing");
    }
}

#[tokio::test]
async fn every_command_s_help_ends_with_examples() {
    for command in ["load", "run", "check", "demo-api", "completions", "man"] {
        let run = apitap(&[command, "--help"], None).await;
        assert_eq!(run.code, 0, "{command}: {}", run.stderr);
        let examples = run
            .stdout
            .split("\nExamples:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{command} --help has no examples:\n{}", run.stdout));
        assert!(
            examples
                .lines()
                .filter(|l| !l.trim().is_empty())
                .all(|l| l.starts_with("  apitap ")
                    || l.starts_with("  curl ")
                    || l.starts_with("  sudo apitap ")
                    || l.starts_with("      ")),
            "{command}:\n{examples}"
        );
    }
}
