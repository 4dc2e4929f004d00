//! Every Rust code block of README.md is the code between the
//! `// README begin` and `// README end` lines of the example the HTML
//! comment above the block names (`<!-- example: PATH -->`, relative to the
//! repository root), unindented. The examples are compiled (and clippy-checked)
//! with the workspace, so the README's Rust code compiles too.

use std::path::{Path, PathBuf};

const BEGIN: &str = "// README begin";
const END: &str = "// README end";
const EXAMPLE_PREFIX: &str = "<!-- example: ";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A README Rust block: the example it names, its first line number, its
/// lines.
struct Block {
    example: String,
    line: usize,
    code: Vec<String>,
}

fn readme_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("```rust") {
            let pointer = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .copied()
                .unwrap_or_default();
            let example = pointer
                .trim()
                .strip_prefix(EXAMPLE_PREFIX)
                .and_then(|p| p.strip_suffix(" -->"))
                .unwrap_or_else(|| {
                    panic!(
                        "README.md line {}: a ```rust block needs `{EXAMPLE_PREFIX}PATH -->` \
                         on the line above it",
                        i + 1
                    )
                })
                .to_string();
            let start = i + 1;
            let len = lines[start..]
                .iter()
                .position(|l| l.trim_start().starts_with("```"))
                .unwrap_or_else(|| panic!("README.md line {}: unclosed code block", i + 1));
            blocks.push(Block {
                example,
                line: start + 1,
                code: lines[start..start + len]
                    .iter()
                    .map(|l| l.to_string())
                    .collect(),
            });
            i = start + len;
        }
        i += 1;
    }
    blocks
}

/// The lines between the README markers of an example, without their
/// common indentation.
fn marked_code(source: &str, path: &str) -> Vec<String> {
    let lines: Vec<&str> = source.lines().collect();
    let position = |marker: &str| {
        let found: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].trim() == marker)
            .collect();
        assert_eq!(found.len(), 1, "{path}: expected one `{marker}` line");
        found[0]
    };
    let (begin, end) = (position(BEGIN), position(END));
    assert!(begin < end, "{path}: `{END}` before `{BEGIN}`");
    let code = &lines[begin + 1..end];
    let indent = code
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    code.iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end().to_string())
        .collect()
}

#[test]
fn readme_rust_blocks_are_the_examples_code() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("reading README.md");
    let blocks = readme_blocks(&readme);
    assert!(
        blocks.len() >= 2,
        "README.md should hold the consumer and transactions code"
    );
    for block in &blocks {
        let source = std::fs::read_to_string(root().join(&block.example))
            .unwrap_or_else(|e| panic!("README.md line {}: {}: {e}", block.line, block.example));
        let code = marked_code(&source, &block.example);
        assert_eq!(
            block.code.join("\n"),
            code.join("\n"),
            "README.md line {} differs from the code between the README markers of {}",
            block.line,
            block.example
        );
    }
}

#[test]
fn every_marked_example_is_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("reading README.md");
    let named: Vec<String> = readme_blocks(&readme)
        .into_iter()
        .map(|b| b.example)
        .collect();
    let examples = root().join("crates/streamhouse-client/examples");
    let mut marked = 0;
    for entry in std::fs::read_dir(&examples).expect("reading the client examples") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("reading an example");
        if source.lines().any(|l| l.trim() == BEGIN) {
            marked += 1;
            let name = format!(
                "crates/streamhouse-client/examples/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            assert!(
                named.contains(&name),
                "{name} has README markers but no README block names it"
            );
        }
    }
    assert!(
        marked >= 2,
        "the consumer and transactions examples carry README markers"
    );
}

#[test]
fn a_changed_block_is_noticed() {
    let example = "crates/streamhouse-client/examples/consumer.rs";
    let source = std::fs::read_to_string(root().join(example)).expect("reading the example");
    let code = marked_code(&source, example);
    let readme = format!(
        "text\n\n{EXAMPLE_PREFIX}{example} -->\n```rust\n{}\n// one more line\n```\n",
        code.join("\n")
    );
    let blocks = readme_blocks(&readme);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].example, example);
    assert_eq!(blocks[0].line, 5);
    assert_ne!(blocks[0].code, code);
    assert_eq!(blocks[0].code[..code.len()], code[..]);
}
