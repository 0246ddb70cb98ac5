//! The README's promises about itself: its first lines are the two commands a newcomer needs, the
//! test command is what `.ci/run` runs, and every Rust snippet is compiled as a doc test.

use std::path::Path;

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The fenced code blocks of a markdown text: (info string, body).
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.push(open.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    blocks
}

/// The commands of a shell block (comments and blank lines dropped).
fn commands(body: &str) -> Vec<String> {
    body.lines()
        .map(|l| l.split('#').next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_first_lines_are_the_ping_node_and_the_test_command() {
    let readme = read("README.md");
    assert!(
        readme.lines().nth(2) == Some("```sh"),
        "the README starts with its title, then the commands"
    );
    let (info, body) = &code_blocks(&readme)[0];
    assert_eq!(info, "sh");
    assert_eq!(
        commands(body),
        ["cargo run --example ping", "bash tests/run"],
        "exactly two commands: run the ping node, run the tests"
    );
}

#[test]
fn ci_ends_with_the_readme_test_command() {
    let readme = read("README.md");
    let test_command = commands(&code_blocks(&readme)[0].1)[1].clone();
    let ci = read(".ci/run");
    let last = ci
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("step "))
        .expect("a last command");
    assert_eq!(
        last, test_command,
        ".ci/run's last command is the README's test command"
    );
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(test_command.trim_start_matches("bash "))
            .is_file(),
        "{test_command} exists"
    );
}

#[test]
fn every_rust_snippet_is_a_doc_test() {
    let lib = read("src/lib.rs");
    assert!(
        lib.contains("#[cfg(doctest)]\n#[doc = include_str!(\"../README.md\")]"),
        "src/lib.rs includes README.md as doc tests"
    );
    let readme = read("README.md");
    let blocks = code_blocks(&readme);
    let rust: Vec<_> = blocks
        .iter()
        .filter(|(info, _)| info == "rust" || info.starts_with("rust,"))
        .collect();
    assert!(rust.len() >= 8, "{} Rust snippets", rust.len());
    for (info, body) in &blocks {
        // rustdoc compiles an unlabelled block as Rust, and skips `ignore` ones: neither may hide
        // a snippet that no longer compiles, or a config that is not Rust.
        assert!(
            matches!(
                info.as_str(),
                "rust" | "rust,no_run" | "sh" | "text" | "nginx"
            ),
            "a code block labelled {info:?} (use rust, rust,no_run, sh, text or nginx):\n{body}"
        );
    }
}
