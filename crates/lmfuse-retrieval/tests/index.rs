//! Index life cycle: build, search each way, add and delete, rebuild over an index, a writer
//! killed half-way, damaged files.

use lmfuse_data::retrieval::Document;
use lmfuse_retrieval::{
    write_index, AnalyzerParams, AnnParams, AnnPolicy, Change, DenseRecord, Index, IndexSpec,
    PassageParams, RetrievalError, SearchMode,
};
use std::path::Path;

fn doc(id: &str, title: &str, text: &str) -> Document {
    Document {
        id: id.into(),
        title: title.into(),
        text: text.into(),
    }
}

fn corpus() -> Vec<Document> {
    vec![
        doc("cats", "Cats", "cats purr and chase mice around the house"),
        doc("dogs", "Dogs", "dogs bark at the postman and fetch sticks"),
        doc("tea", "Tea", "green tea is brewed with water below boiling"),
        doc("zh", "", "我们在北京大学学习自然语言处理"),
    ]
}

fn spec(dense: bool) -> IndexSpec {
    IndexSpec {
        analyzer: AnalyzerParams::default(),
        passages: PassageParams {
            words: 4,
            overlap: 1,
        },
        dense: dense.then(|| DenseRecord {
            model: "toy".into(),
            weights_sha256: "0".into(),
            dim: 3,
            settings: serde_json::json!({}),
        }),
        ann: None,
    }
}

/// A toy "encoder": counts of three topic words in the text.
fn toy_vector(text: &str) -> Vec<f32> {
    let t = text.to_lowercase();
    ["cat", "dog", "tea"]
        .iter()
        .map(|w| t.matches(w).count() as f32 + 0.01)
        .collect()
}

fn change(spec: &IndexSpec, add: Vec<Document>, delete: Vec<String>) -> Change {
    let mut c = Change {
        delete,
        add,
        vectors: Vec::new(),
    };
    if spec.dense.is_some() {
        c.vectors = c
            .passages_to_encode(spec)
            .iter()
            .flat_map(|p| toy_vector(p))
            .collect();
    }
    c
}

fn ids(index: &Index, hits: &[(usize, f32)]) -> Vec<String> {
    hits.iter()
        .map(|h| index.documents()[h.0].id.clone())
        .collect()
}

fn build(dir: &Path) -> Index {
    let s = spec(true);
    write_index(dir, &s, None, change(&s, corpus(), vec![])).unwrap();
    Index::open(dir).unwrap()
}

#[test]
fn every_mode_finds_the_right_document() {
    let dir = tempfile::tempdir().unwrap();
    let index = build(dir.path());
    assert_eq!(index.manifest().documents, 4);
    assert!(
        index.manifest().passages > 4,
        "long texts are cut into passages"
    );
    let top = |q: &str, mode| {
        ids(
            &index,
            &index.search(q, Some(&toy_vector(q)), mode, 2).unwrap(),
        )[0]
        .clone()
    };
    assert_eq!(top("barking dogs", SearchMode::Bm25), "dogs");
    assert_eq!(top("北京大学", SearchMode::Bm25), "zh");
    assert_eq!(top("tea", SearchMode::Dense), "tea");
    assert_eq!(top("cats", SearchMode::Rrf { k: 60.0 }), "cats");
    assert_eq!(
        top("dog", SearchMode::Weighted { dense_weight: 0.5 }),
        "dogs"
    );
    assert!(
        index.bm25("the and of", 5).unwrap().is_empty(),
        "stop words only"
    );
}

#[test]
fn adds_and_deletes_make_a_new_generation_that_equals_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(true);
    let base = build(dir.path());
    let extra = doc("cocoa", "Cocoa", "hot cocoa with tea and a cat");
    let c = change(&s, vec![extra.clone()], vec!["dogs".into()]);
    let m = write_index(dir.path(), &s, Some(&base), c).unwrap();
    assert_eq!(m.generation, 2);
    drop(base);
    let updated = Index::open(dir.path()).unwrap();
    assert_eq!(updated.manifest().documents, 4);
    assert!(updated.bm25("dogs bark", 5).unwrap().is_empty());
    assert_eq!(ids(&updated, &updated.bm25("cocoa", 5).unwrap()), ["cocoa"]);
    let old_gen = dir.path().join("gen-000001");
    assert!(!old_gen.exists(), "the old generation is removed");

    let fresh_dir = tempfile::tempdir().unwrap();
    let mut docs = corpus();
    docs.retain(|d| d.id != "dogs");
    docs.push(extra);
    write_index(fresh_dir.path(), &s, None, change(&s, docs, vec![])).unwrap();
    let fresh = Index::open(fresh_dir.path()).unwrap();
    for q in ["tea", "cat", "cocoa tea"] {
        let v = toy_vector(q);
        let a = updated
            .search(q, Some(&v), SearchMode::Rrf { k: 60.0 }, 4)
            .unwrap();
        let b = fresh
            .search(q, Some(&v), SearchMode::Rrf { k: 60.0 }, 4)
            .unwrap();
        assert_eq!(ids(&updated, &a), ids(&fresh, &b), "query {q}");
    }
}

#[test]
fn bad_changes_are_refused_and_leave_the_index_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(true);
    let base = build(dir.path());
    let dup = change(&s, vec![doc("tea", "", "again")], vec![]);
    assert!(matches!(
        write_index(dir.path(), &s, Some(&base), dup),
        Err(RetrievalError::DuplicateId { .. })
    ));
    let unknown = change(&s, vec![], vec!["nope".into()]);
    assert!(matches!(
        write_index(dir.path(), &s, Some(&base), unknown),
        Err(RetrievalError::UnknownId { .. })
    ));
    let mut short = change(&s, vec![doc("x", "", "cat")], vec![]);
    short.vectors.pop();
    assert!(matches!(
        write_index(dir.path(), &s, Some(&base), short),
        Err(RetrievalError::Vectors { .. })
    ));
    let all: Vec<String> = corpus().into_iter().map(|d| d.id).collect();
    assert!(matches!(
        write_index(dir.path(), &s, Some(&base), change(&s, vec![], all)),
        Err(RetrievalError::Empty)
    ));
    drop(base);
    let again = Index::open(dir.path()).unwrap();
    assert_eq!(
        (again.manifest().generation, again.manifest().documents),
        (1, 4)
    );
}

#[test]
fn a_half_written_generation_is_ignored_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(false);
    write_index(dir.path(), &s, None, change(&s, corpus(), vec![])).unwrap();
    // What a writer killed before swapping the manifest leaves: a partial next generation.
    let partial = dir.path().join("gen-000002");
    std::fs::create_dir_all(partial.join("lexical")).unwrap();
    std::fs::write(partial.join("documents.jsonl"), "{\"key\": 0, ").unwrap();
    let index = Index::open(dir.path()).unwrap();
    assert_eq!(ids(&index, &index.bm25("tea", 1).unwrap()), ["tea"]);
    write_index(
        dir.path(),
        &s,
        Some(&index),
        change(&s, vec![doc("new", "", "fresh tea")], vec![]),
    )
    .unwrap();
    let after = Index::open(dir.path()).unwrap();
    assert_eq!(after.manifest().generation, 2);
    assert_eq!(after.manifest().documents, 5);
}

#[test]
fn damaged_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let gen = dir.path().join("gen-000001");
    let dense = gen.join("dense.safetensors");
    let bytes = std::fs::read(&dense).unwrap();
    std::fs::write(&dense, &bytes[..bytes.len() / 2]).unwrap();
    let err = Index::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("dense.safetensors"), "{err}");

    std::fs::write(
        dir.path().join("index.json"),
        "{\"format\": \"lmfuse-index\", \"version\": 9}",
    )
    .unwrap();
    let err = Index::open(dir.path()).err().unwrap();
    assert!(matches!(err, RetrievalError::Version { .. }), "{err}");
    let none = Index::open(&dir.path().join("missing")).err().unwrap();
    assert!(matches!(none, RetrievalError::NotAnIndex { .. }));
}

#[test]
fn a_bm25_only_index_refuses_dense_search() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(false);
    write_index(dir.path(), &s, None, change(&s, corpus(), vec![])).unwrap();
    let index = Index::open(dir.path()).unwrap();
    assert!(matches!(
        index.search("tea", Some(&[1.0, 0.0, 0.0]), SearchMode::Dense, 3),
        Err(RetrievalError::NoDense)
    ));
}

#[test]
fn candidates_are_the_union_of_both_sides_with_every_feature() {
    let dir = tempfile::tempdir().unwrap();
    let index = build(dir.path());
    let q = "green tea";
    let v = toy_vector(q);
    let all = index.candidates(q, &v, 10).unwrap();
    assert_eq!(all.len(), 4, "every document is within reach at depth 10");
    for c in &all {
        assert_eq!(c.features.len(), lmfuse_retrieval::FEATURE_NAMES.len());
        assert!(c.features.iter().all(|x| x.is_finite()), "{c:?}");
    }
    let tea = all
        .iter()
        .find(|c| index.documents()[c.doc].id == "tea")
        .unwrap();
    let named = |n: &str| {
        tea.features[lmfuse_retrieval::FEATURE_NAMES
            .iter()
            .position(|f| *f == n)
            .unwrap()]
    };
    assert_eq!(
        (
            named("in_bm25_top"),
            named("bm25_over_best"),
            named("text_share")
        ),
        (1.0, 1.0, 1.0)
    );
    let one = index.candidates(q, &v, 1).unwrap();
    assert!(one.len() <= 2, "top 1 of each side: {one:?}");
}

#[test]
fn an_index_with_a_graph_answers_as_exact_search_and_keeps_it_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(true);
    s.ann = Some(AnnPolicy {
        params: AnnParams::default(),
        min_passages: 0,
    });
    let m = write_index(dir.path(), &s, None, change(&s, corpus(), vec![])).unwrap();
    assert!(m.ann.is_some());
    let exact = build(&tempfile::tempdir().unwrap().path().join("exact"));
    let index = Index::open(dir.path()).unwrap();
    assert!(index.is_approximate() && !exact.is_approximate());
    for q in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] {
        let (a, e) = (index.dense(&q, 1).unwrap(), exact.dense(&q, 1).unwrap());
        assert_eq!(ids(&index, &a), ids(&exact, &e));
        assert!((a[0].1 - e[0].1).abs() < 1e-5);
    }
    let more = vec![doc("teapot", "Teapot", "a tea pot for tea and more tea")];
    write_index(
        dir.path(),
        &s,
        Some(&index),
        change(&s, more, vec!["tea".into()]),
    )
    .unwrap();
    let index = Index::open(dir.path()).unwrap();
    let hits = index.dense(&[0.0, 0.0, 1.0], 1).unwrap();
    assert_eq!(ids(&index, &hits), ["teapot"]);
    // Below the policy's size the graph is left out and search is exact.
    s.ann = Some(AnnPolicy {
        params: AnnParams::default(),
        min_passages: 1000,
    });
    let small = tempfile::tempdir().unwrap();
    let m = write_index(small.path(), &s, None, change(&s, corpus(), vec![])).unwrap();
    assert!(m.ann.is_none());
    // A damaged graph is named.
    let graph = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("gen-"))
        .unwrap()
        .join("ann/ann.hnsw.graph");
    let bytes = std::fs::read(&graph).unwrap();
    std::fs::write(&graph, &bytes[..bytes.len() / 2]).unwrap();
    let err = Index::open(dir.path())
        .err()
        .expect("a truncated graph is refused");
    assert!(err.to_string().contains("ann"), "{err}");
}
