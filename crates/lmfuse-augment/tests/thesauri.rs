//! The real thesauri of `scripts/fetch-thesauri.sh` load and give the synonyms they hold.

use lmfuse_augment::Thesaurus;
use std::path::PathBuf;

fn fetched(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/thesauri")
        .join(name);
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "{} not found: run `bash scripts/fetch-thesauri.sh`",
        path.display()
    );
    assert!(
        std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() != Ok("1"),
        "{msg}"
    );
    eprintln!("SKIPPED: {msg}");
    None
}

#[test]
fn the_english_mythes_file_loads() {
    let Some(path) = fetched("th_en_US_v2.dat") else {
        return;
    };
    let t = Thesaurus::load(&path).unwrap();
    assert!(t.len() > 50_000, "{} words", t.len());
    assert!(
        t.synonyms("happy").iter().any(|s| s == "glad"),
        "{:?}",
        t.synonyms("happy")
    );
    assert!(t.synonyms("movie").iter().any(|s| s == "film"));
}

#[test]
fn the_chinese_cilin_file_loads() {
    let Some(path) = fetched("cilin_ex.txt") else {
        return;
    };
    let t = Thesaurus::load(&path).unwrap();
    assert!(t.len() > 30_000, "{} words", t.len());
    assert!(
        t.synonyms("人类").iter().any(|s| s == "全人类"),
        "{:?}",
        t.synonyms("人类")
    );
}
