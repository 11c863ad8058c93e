//! Forests and boosted trees stored before the tree heads took sparse rows (their tensors and
//! probabilities written by that code into `data/trees_before_sparse.json`) load and predict
//! the same probabilities, bit for bit, from dense rows and from the same rows as CSR.

use lmfuse_classic::{Gbdt, ProbaHead, RandomForest};
use lmfuse_core::{CsrMatrix, DenseMatrix, Features, Tensor};
use serde_json::Value;
use std::collections::BTreeMap;

fn tensors(v: &Value) -> BTreeMap<String, Tensor> {
    let obj = v.as_object().expect("tensors by name");
    obj.iter()
        .map(|(name, t)| {
            let shape: Vec<usize> = serde_json::from_value(t["shape"].clone()).unwrap();
            let data = &t["data"];
            let tensor = if let Some(bits) = data.get("f32") {
                let bits: Vec<u32> = serde_json::from_value(bits.clone()).unwrap();
                Tensor::f32(shape, bits.into_iter().map(f32::from_bits).collect())
            } else {
                Tensor::i32(shape, serde_json::from_value(data["i32"].clone()).unwrap())
            };
            (name.clone(), tensor)
        })
        .collect()
}

fn bits(p: &[f32]) -> Vec<u32> {
    p.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn stored_trees_predict_as_before_from_dense_and_sparse_rows() {
    let text = include_str!("data/trees_before_sparse.json");
    let v: Value = serde_json::from_str(text).unwrap();
    let (d, k) = (v["n_features"].as_u64().unwrap() as usize, 3);
    let rows: Vec<u32> = serde_json::from_value(v["rows"].clone()).unwrap();
    let rows: Vec<f32> = rows.into_iter().map(f32::from_bits).collect();
    let n = rows.len() / d;
    let dense = DenseMatrix::new(n, d, rows).unwrap();
    // The fixture's last column is mostly 0, so the CSR rows skip many entries.
    let sparse = CsrMatrix::from_dense(&dense);
    assert!(sparse.nnz() < n * d);
    let inputs = [Features::Dense(dense), Features::Sparse(sparse)];
    let rf = RandomForest::from_tensors(d, k, &tensors(&v["rf"]["tensors"])).unwrap();
    let gb = Gbdt::from_tensors(d, k, &tensors(&v["gbdt"]["tensors"])).unwrap();
    let heads: [(&str, &dyn ProbaHead); 2] = [("rf", &rf), ("gbdt", &gb)];
    for (name, head) in heads {
        let want: Vec<u32> = serde_json::from_value(v[name]["proba"].clone()).unwrap();
        for x in &inputs {
            assert_eq!(bits(&head.predict_proba(x).unwrap()), want, "{name}");
        }
    }
}
