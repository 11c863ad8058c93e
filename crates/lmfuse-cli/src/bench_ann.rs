//! `lmfuse bench ann`: exact search against an HNSW graph on synthetic unit vectors, side by
//! side: build time, memory, queries per second on one thread, recall@10 per ef_search.

use clap::Args;
use lmfuse_core::SeededRng;
use lmfuse_retrieval::ann::{Ann, AnnParams};
use lmfuse_retrieval::{dot, normalize, top_k};
use serde::Serialize;
use std::time::Instant;

/// Arguments of `lmfuse bench ann`.
#[derive(Args, Debug)]
pub struct BenchAnnArgs {
    /// Vectors in the collection.
    #[arg(long, default_value_t = 1_000_000)]
    vectors: usize,
    /// Dimension.
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Clusters the vectors are drawn around (embeddings of real texts cluster by topic).
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    /// Sub-clusters drawn around each cluster's centre (0: none): vectors are then drawn
    /// around the sub-cluster centres, so that each vector has close relatives (paraphrases,
    /// near-duplicates) inside a broader topic, as text embeddings do.
    #[arg(long, default_value_t = 0)]
    subclusters: usize,
    /// Standard deviation of each coordinate's noise of a sub-cluster centre around its
    /// cluster's centre, before normalising.
    #[arg(long, default_value_t = 0.05)]
    sub_noise: f32,
    /// Standard deviation of each coordinate's noise of a vector around its (sub-)cluster's
    /// centre (a unit vector), before normalising.
    #[arg(long, default_value_t = 0.06)]
    noise: f32,
    /// Dimension of a latent space the vectors are drawn in (0: none). The clusters, their
    /// sub-clusters and the noise above then live in that space, and one fixed random linear
    /// map takes them to `--dim`, plus `--ambient-noise`: text embeddings span few effective
    /// directions, so that distances between them vary continuously instead of all
    /// concentrating on one value as iid noise in 384 dimensions makes them.
    #[arg(long, default_value_t = 0)]
    latent_dim: usize,
    /// Standard deviation of each coordinate's noise added after the latent map.
    #[arg(long, default_value_t = 0.0)]
    ambient_noise: f32,
    /// Queries (drawn like the vectors, not among them).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// HNSW neighbours per node (M).
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// HNSW candidates while inserting.
    #[arg(long, default_value_t = 100)]
    ef_construction: usize,
    /// HNSW candidates while searching, comma-separated (one row each).
    #[arg(long, value_delimiter = ',', default_value = "32,64,128,256")]
    ef_search: Vec<usize>,
    /// Seed of the vectors.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct EfRow {
    ef_search: usize,
    recall_at_10: f64,
    queries_per_s: f64,
    speedup_over_exact: f64,
}

#[derive(Serialize)]
struct AnnReport {
    vectors: usize,
    dim: usize,
    clusters: usize,
    subclusters: usize,
    sub_noise: f32,
    noise: f32,
    latent_dim: usize,
    ambient_noise: f32,
    queries: usize,
    m: usize,
    ef_construction: usize,
    build_s: f64,
    exact_queries_per_s: f64,
    peak_rss_mb: f64,
    rows: Vec<EfRow>,
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut SeededRng) -> f32 {
    let u = |rng: &mut SeededRng| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (a, b) = (u(rng), u(rng));
    ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
}

/// `n` unit vectors around `centres` (`dim` each), `noise` per coordinate.
fn draw(rng: &mut SeededRng, centres: &[f32], dim: usize, n: usize, noise: f32) -> Vec<f32> {
    let clusters = centres.len() / dim;
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.below(clusters);
        let mut v: Vec<f32> = centres[c * dim..(c + 1) * dim]
            .iter()
            .map(|x| x + noise * normal(rng))
            .collect();
        normalize(&mut v);
        out.extend(v);
    }
    out
}

/// The collection and the queries, drawn as the arguments say.
fn draw_collection(rng: &mut SeededRng, args: &BenchAnnArgs) -> (Vec<f32>, Vec<f32>) {
    let space = if args.latent_dim > 0 {
        args.latent_dim
    } else {
        args.dim
    };
    let mut centres = Vec::with_capacity(args.clusters * space);
    for _ in 0..args.clusters {
        let mut c: Vec<f32> = (0..space).map(|_| normal(rng)).collect();
        normalize(&mut c);
        centres.extend(c);
    }
    if args.subclusters > 0 {
        let n = args.clusters * args.subclusters;
        centres = draw(rng, &centres, space, n, args.sub_noise);
    }
    let vectors = draw(rng, &centres, space, args.vectors, args.noise);
    let queries = draw(rng, &centres, space, args.queries, args.noise);
    if args.latent_dim == 0 {
        return (vectors, queries);
    }
    let map: Vec<f32> = (0..args.dim * space).map(|_| normal(rng)).collect();
    let mut lift = |latent: &[f32]| -> Vec<f32> {
        let mut out = Vec::with_capacity(latent.len() / space * args.dim);
        for z in latent.chunks_exact(space) {
            let mut v: Vec<f32> = map
                .chunks_exact(space)
                .map(|row| dot(row, z) + args.ambient_noise * normal(rng))
                .collect();
            normalize(&mut v);
            out.extend(v);
        }
        out
    };
    (lift(&vectors), lift(&queries))
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `lmfuse bench ann`.
pub fn run(args: &BenchAnnArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.vectors >= 10 && args.dim >= 2 && args.clusters >= 1 && args.queries >= 1,
        "--vectors ≥ 10, --dim ≥ 2, --clusters ≥ 1, --queries ≥ 1"
    );
    let mut rng = SeededRng::new(args.seed);
    let (vectors, queries) = draw_collection(&mut rng, args);
    eprintln!(
        "bench ann: {} vectors of {} dimensions drawn; exact search...",
        args.vectors, args.dim
    );
    let started = Instant::now();
    let truth: Vec<Vec<usize>> = queries
        .chunks_exact(args.dim)
        .map(|q| {
            let scores: Vec<f32> = vectors.chunks_exact(args.dim).map(|v| dot(v, q)).collect();
            top_k(&scores, 10).into_iter().map(|h| h.0).collect()
        })
        .collect();
    let exact_qps = args.queries as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "bench ann: building HNSW (m {}, ef_construction {})...",
        args.m, args.ef_construction
    );
    let params = AnnParams {
        m: args.m,
        ef_construction: args.ef_construction,
        ef_search: 1,
    };
    let started = Instant::now();
    let ann = Ann::build(&vectors, args.dim, params)?;
    let build_s = started.elapsed().as_secs_f64();
    let rows = args
        .ef_search
        .iter()
        .map(|&ef| ef_row(&ann, &queries, &truth, args.dim, ef, exact_qps))
        .collect();
    let report = AnnReport {
        vectors: args.vectors,
        dim: args.dim,
        clusters: args.clusters,
        subclusters: args.subclusters,
        sub_noise: args.sub_noise,
        noise: args.noise,
        latent_dim: args.latent_dim,
        ambient_noise: args.ambient_noise,
        queries: args.queries,
        m: args.m,
        ef_construction: args.ef_construction,
        build_s,
        exact_queries_per_s: exact_qps,
        peak_rss_mb: peak_rss_mb(),
        rows,
    };
    print_report(&report, args.json)
}

fn ef_row(
    ann: &Ann,
    queries: &[f32],
    truth: &[Vec<usize>],
    dim: usize,
    ef: usize,
    exact_qps: f64,
) -> EfRow {
    let started = Instant::now();
    let found: usize = queries
        .chunks_exact(dim)
        .zip(truth)
        .map(|(q, t)| {
            ann.search_with(q, 10, ef)
                .iter()
                .filter(|h| t.contains(&h.0))
                .count()
        })
        .sum();
    let qps = truth.len() as f64 / started.elapsed().as_secs_f64();
    EfRow {
        ef_search: ef,
        recall_at_10: found as f64 / (10 * truth.len()) as f64,
        queries_per_s: qps,
        speedup_over_exact: qps / exact_qps,
    }
}

fn print_report(r: &AnnReport, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string(r)?)?;
        return Ok(());
    }
    outln!(
        "{} vectors × {} ({} clusters), {} queries, one thread each",
        r.vectors,
        r.dim,
        r.clusters,
        r.queries
    )?;
    outln!(
        "exact search: {:.1} queries/s; HNSW built in {:.1} s; peak memory {:.0} MB",
        r.exact_queries_per_s,
        r.build_s,
        r.peak_rss_mb
    )?;
    outln!(
        "  {:>9} {:>11} {:>11} {:>9}",
        "ef_search",
        "recall@10",
        "queries/s",
        "speed-up"
    )?;
    for row in &r.rows {
        outln!(
            "  {:>9} {:>11.4} {:>11.1} {:>8.1}×",
            row.ef_search,
            row.recall_at_10,
            row.queries_per_s,
            row.speedup_over_exact
        )?;
    }
    Ok(())
}
