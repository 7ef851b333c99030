//! Throughput benchmarks that print numbers (`novapay bench llm|embed`); speed targets live here, not in
//! timed tests. `scripts/bench/compare-runtimes.py` runs the same texts through llama.cpp and
//! sentence-transformers and prints the ratios.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::embed::{EmbedError, Embedder};
use crate::engine::{EngineError, Llm, SamplingParams};

#[derive(Debug, Serialize)]
pub struct LlmBenchReport {
    pub model: String,
    pub weight_types: String,
    pub threads: usize,
    pub rounds: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Medians over the rounds.
    pub prompt_tokens_per_s: f64,
    pub generation_tokens_per_s: f64,
    pub time_to_first_token_ms: f64,
    pub load_ms: f64,
    /// The first request after the load (the warm-up: up to 32 prompt tokens, 4 generated), which
    /// also pays the first touches of the weights (page faults of a mapped tile cache).
    pub first_request_ms: f64,
    /// What the tile cache did at this load (`off`, `mapped <path>`, `written <path>`, ...).
    pub tile_cache: String,
    pub peak_rss_mb: f64,
    /// Weight bytes one generated token reads (every matrix once).
    pub weight_bytes_per_token: u64,
    /// This machine's memory bandwidth, measured here with the same thread count.
    pub memory: MemoryBandwidth,
    /// generation tok/s x bytes per token / read bandwidth: the fraction of the physical limit reached.
    pub fraction_of_bandwidth_limit: f64,
    /// generation tok/s the read bandwidth would allow at most.
    pub bandwidth_limit_tokens_per_s: f64,
    /// One generated token, in milliseconds (1000 / generation tok/s).
    pub generation_ms_per_token: f64,
    /// The same step's matrix products alone (every weight once, same kernels and parallel sections,
    /// no other op): the rest of `generation_ms_per_token` is attention, norms, RoPE and sampling.
    pub matvec_ms_per_token: f64,
    /// Weight bytes per token / `matvec_ms_per_token`: the kernels' streaming rate, to compare with
    /// `memory.read_gb_per_s`.
    pub matvec_gb_per_s: f64,
    /// With `--shared-prefix N`: time to first token for a first question, another question after
    /// the same N-token prefix, and a follow-up that repeats the whole previous turn.
    pub prefix_cache: Option<PrefixCacheReport>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MemoryBandwidth {
    pub threads: usize,
    pub buffer_mb: usize,
    /// Parallel sequential read (what streaming weights needs), best of several passes.
    pub read_gb_per_s: f64,
    /// memcpy, counting bytes read plus bytes written, best of several passes.
    pub copy_gb_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct PrefixCacheReport {
    pub shared_prefix_tokens: usize,
    pub question_tokens: usize,
    pub first_question_ttft_ms: f64,
    pub first_question_reused_tokens: usize,
    pub same_prefix_ttft_ms: f64,
    pub same_prefix_reused_tokens: usize,
    pub follow_up_ttft_ms: f64,
    pub follow_up_prompt_tokens: usize,
    pub follow_up_reused_tokens: usize,
}

#[derive(Debug, Serialize)]
pub struct EmbedBenchReport {
    pub model: String,
    pub threads: usize,
    pub rounds: usize,
    pub chunks: usize,
    pub batch_size: usize,
    pub mean_words_per_chunk: f64,
    /// Indexing: passages (with the model's passage prefix) embedded in batches of `batch_size`.
    pub chunks_per_s: f64,
    /// What one customer waits for: one question (with the query prefix) embedded alone, median
    /// over every question, asked 4 times a round.
    pub query_latency_ms: f64,
    /// 90th percentile of the same single-question timings.
    pub query_latency_p90_ms: f64,
    /// CPU time (all threads) per single question: with one thread, the latency a machine with
    /// other work running cannot distort.
    pub query_cpu_ms: f64,
    pub load_ms: f64,
    /// Resident memory after loading and embedding single questions (what a serving process holds).
    pub query_rss_mb: f64,
    /// Peak resident memory of the whole run, batches included (what indexing needs).
    pub peak_rss_mb: f64,
}

pub struct LlmBenchSpec<'a> {
    pub prompt_text: &'a str,
    pub prompt_tokens: usize,
    pub generate_tokens: usize,
    pub rounds: usize,
    pub threads: usize,
    pub load_ms: f64,
    /// Tokens shared by the two questions of the prefix-cache measurement (0: skip it).
    pub shared_prefix: usize,
}

/// Prefill of a ~`prompt_tokens` prompt, then exactly `generate_tokens` greedy tokens, `rounds` times.
pub fn bench_llm(llm: &mut Llm, spec: &LlmBenchSpec) -> Result<LlmBenchReport, EngineError> {
    let mut ids = llm.tokenizer.encode(spec.prompt_text, false)?;
    if ids.is_empty() {
        return Err(EngineError::InvalidInput("empty benchmark prompt".into()));
    }
    while ids.len() < spec.prompt_tokens {
        let again = ids.clone();
        ids.extend(again);
    }
    ids.truncate(spec.prompt_tokens);
    let params = SamplingParams {
        max_new_tokens: spec.generate_tokens,
        ignore_eos: true,
        repeat_penalty: 1.0,
        ..SamplingParams::default()
    };
    let never = || false;
    let mut sink = |_: &str| ControlFlow::Continue(());
    // Warm-up: first touches of the weights and the thread pools.
    let first = Instant::now();
    llm.generate(
        &ids[..ids.len().min(32)],
        &SamplingParams {
            max_new_tokens: 4,
            ..params.clone()
        },
        &never,
        &mut sink,
    )?;
    let first_request_ms = first.elapsed().as_secs_f64() * 1000.0;
    let (mut prompt, mut gen, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    let mut generated = 0;
    for _ in 0..spec.rounds.max(1) {
        // Each round is a first question: nothing reused from the previous round.
        llm.forget();
        let s = llm.generate(&ids, &params, &never, &mut sink)?;
        prompt.push(s.timings.prompt_tokens_per_s(&s.usage));
        gen.push(s.timings.generation_tokens_per_s(&s.usage));
        ttft.push(s.timings.time_to_first_token_ms);
        generated = s.usage.completion_tokens;
    }
    let prefix_cache = if spec.shared_prefix > 0 {
        Some(bench_prefix_cache(llm, &ids, spec.shared_prefix, &params)?)
    } else {
        None
    };
    let weight_bytes = llm.weight_bytes_per_token();
    let matvec_ms = llm.time_matvec_step(spec.generate_tokens.clamp(3, 32))?;
    // Before the bandwidth test, whose buffers would count as the model's memory.
    let peak_rss = peak_rss_mb();
    let memory = memory_bandwidth(spec.threads);
    let gen_rate = median(&mut gen);
    let limit = memory.read_gb_per_s * 1e9 / weight_bytes.max(1) as f64;
    Ok(LlmBenchReport {
        weight_bytes_per_token: weight_bytes,
        memory,
        fraction_of_bandwidth_limit: gen_rate / limit,
        bandwidth_limit_tokens_per_s: limit,
        generation_ms_per_token: 1000.0 / gen_rate.max(f64::MIN_POSITIVE),
        matvec_ms_per_token: matvec_ms,
        matvec_gb_per_s: weight_bytes as f64 / matvec_ms.max(f64::MIN_POSITIVE) / 1e6,
        prefix_cache,
        model: llm.name.clone(),
        weight_types: llm.config().weight_types.clone(),
        threads: spec.threads,
        rounds: spec.rounds.max(1),
        prompt_tokens: ids.len(),
        generated_tokens: generated,
        prompt_tokens_per_s: median(&mut prompt),
        generation_tokens_per_s: gen_rate,
        time_to_first_token_ms: median(&mut ttft),
        load_ms: spec.load_ms,
        first_request_ms,
        tile_cache: llm.config().tile_cache.clone(),
        peak_rss_mb: peak_rss,
    })
}

/// TTFT of a first question (prefix + question A, empty cache), of question B after the same prefix
/// (the cache still holds A's turn), and of a follow-up (A's whole turn + answer + a short question).
fn bench_prefix_cache(
    llm: &mut Llm,
    ids: &[u32],
    shared: usize,
    params: &SamplingParams,
) -> Result<PrefixCacheReport, EngineError> {
    let shared = shared.min(ids.len().saturating_sub(1));
    let question = ids.len() - shared;
    let never = || false;
    let mut sink = |_: &str| ControlFlow::Continue(());
    let params = SamplingParams {
        max_new_tokens: params.max_new_tokens.min(16),
        ..params.clone()
    };
    // Question B: the same number of tokens, from a different place in the text.
    let mut other: Vec<u32> = ids[shared..].iter().rev().copied().collect();
    other.truncate(question);
    let first: Vec<u32> = ids.to_vec();
    let second: Vec<u32> = ids[..shared].iter().chain(&other).copied().collect();

    llm.forget();
    let a = llm.generate(&first, &params, &never, &mut sink)?;
    let b = llm.generate(&second, &params, &never, &mut sink)?;
    let mut follow_up = llm.cached_tokens().to_vec();
    follow_up.extend(ids[shared..].iter().take(32));
    let c = llm.generate(&follow_up, &params, &never, &mut sink)?;
    Ok(PrefixCacheReport {
        shared_prefix_tokens: shared,
        question_tokens: question,
        first_question_ttft_ms: a.timings.time_to_first_token_ms,
        first_question_reused_tokens: a.usage.cached_prompt_tokens,
        same_prefix_ttft_ms: b.timings.time_to_first_token_ms,
        same_prefix_reused_tokens: b.usage.cached_prompt_tokens,
        follow_up_ttft_ms: c.timings.time_to_first_token_ms,
        follow_up_prompt_tokens: follow_up.len(),
        follow_up_reused_tokens: c.usage.cached_prompt_tokens,
    })
}

/// Read and copy bandwidth over a buffer far larger than the caches, split across `threads`.
pub fn memory_bandwidth(threads: usize) -> MemoryBandwidth {
    const MB: usize = 1 << 20;
    let buffer_mb = 256;
    let threads = threads.max(1);
    let words = buffer_mb * MB / 8;
    let src: Vec<u64> = (0..words as u64).collect();
    let mut dst = vec![0u64; words];
    let chunk = words.div_ceil(threads);
    let best = |f: &mut dyn FnMut() -> f64| (0..5).map(|_| f()).fold(0.0, f64::max);
    let read = best(&mut || {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = src
                .chunks(chunk)
                .map(|c| scope.spawn(move || c.iter().fold(0u64, |a, b| a.wrapping_add(*b))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        (words * 8) as f64 / t.elapsed().as_secs_f64() / 1e9
    });
    let copy = best(&mut || {
        let t = Instant::now();
        std::thread::scope(|scope| {
            for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                scope.spawn(move || d.copy_from_slice(s));
            }
        });
        std::hint::black_box(&dst);
        (2 * words * 8) as f64 / t.elapsed().as_secs_f64() / 1e9
    });
    MemoryBandwidth {
        threads,
        buffer_mb,
        read_gb_per_s: read,
        copy_gb_per_s: copy,
    }
}

pub fn bench_embed(
    embedder: &Embedder,
    questions: &[String],
    chunks: &[String],
    rounds: usize,
    threads: usize,
    batch_size: usize,
    load_ms: f64,
) -> Result<EmbedBenchReport, EmbedError> {
    let rounds = rounds.max(1);
    // Warm-up: one question and one small batch.
    embedder.embed_queries(&questions[..questions.len().min(1)])?;
    embedder.embed_passages(&chunks[..chunks.len().min(4)])?;
    let mut latencies = Vec::new();
    let cpu_start = process_cpu_ns();
    for _ in 0..rounds * 4 {
        for question in questions {
            let t = Instant::now();
            embedder.embed_queries(std::slice::from_ref(question))?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let query_cpu_ms =
        process_cpu_ns().saturating_sub(cpu_start) as f64 / 1e6 / latencies.len().max(1) as f64;
    let query_rss_mb = rss_mb();
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        embedder.embed_passages(chunks)?;
        rates.push(chunks.len() as f64 / t.elapsed().as_secs_f64());
    }
    let words: usize = chunks.iter().map(|c| c.split_whitespace().count()).sum();
    latencies.sort_by(f64::total_cmp);
    let p90 = latencies
        .get((latencies.len() * 9 / 10).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    Ok(EmbedBenchReport {
        model: embedder.name.clone(),
        threads,
        rounds,
        chunks: chunks.len(),
        batch_size,
        mean_words_per_chunk: words as f64 / chunks.len().max(1) as f64,
        chunks_per_s: median(&mut rates),
        query_latency_ms: median(&mut latencies),
        query_latency_p90_ms: p90,
        query_cpu_ms,
        load_ms,
        query_rss_mb,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// Reads the benchmark texts the comparison script also uses, or falls back to a built-in text.
pub fn read_text_or_default(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|_| DEFAULT_TEXT.repeat(8))
}

/// One question per non-empty line, or a few built-in customer questions when the file is missing.
pub fn read_questions_or_default(path: &Path) -> Vec<String> {
    let from_file = non_empty_lines(path);
    if !from_file.is_empty() {
        return from_file;
    }
    [
        "how much does an international transfer cost",
        "Сколько стоит перевод за границу?",
        "I was on the bus and someone nicked my card, what do I do",
        "какой лимит на снятие наличных в день",
    ]
    .map(str::to_string)
    .to_vec()
}

fn non_empty_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// One chunk per non-empty line, or built-in ~200-word chunks when the file is missing.
pub fn read_chunks_or_default(path: &Path, count: usize) -> Vec<String> {
    let from_file = non_empty_lines(path);
    if !from_file.is_empty() {
        return from_file;
    }
    (0..count)
        .map(|i| format!("{} {}", i, DEFAULT_TEXT.repeat(2)))
        .collect()
}

const DEFAULT_TEXT: &str = "NovaPay charges 0.5% for domestic transfers and 1.5% for international \
transfers; business accounts may have negotiated rates. Unverified accounts can send up to $1,000 per \
day and verified accounts up to $10,000. International transfers take up to 3 business days. Support \
works Monday to Friday, 9:00-18:00 GMT+3, at support@novapay.com. Комиссия за внутренние переводы \
составляет 0,5%, за международные — 1,5%. ";

#[derive(Debug, Serialize)]
pub struct HttpBenchReport {
    pub url: String,
    pub sessions: usize,
    pub questions_per_session: usize,
    pub requests: usize,
    pub ok: usize,
    /// Refused because the generation queue was full (429/503).
    pub refused: usize,
    pub other_errors: usize,
    pub statuses: std::collections::BTreeMap<u16, usize>,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Slowest refusal: overflow must be answered at once, never hang.
    pub max_refusal_ms: f64,
    pub wall_s: f64,
    pub answered_per_s: f64,
}

const HTTP_QUESTIONS: &[&str] = &[
    "How much does a domestic transfer cost?",
    "And for international ones?",
    "What is the daily limit for unverified accounts?",
    "How long do international transfers take?",
    "Как заблокировать карту?",
    "When does support work?",
];

/// `sessions` concurrent conversations, each asking `questions` in turn against a running server.
pub fn bench_http(
    url: &str,
    sessions: usize,
    questions: usize,
    api_key: Option<&str>,
) -> HttpBenchReport {
    let started = Instant::now();
    let query_url = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let handles: Vec<_> = (0..sessions)
        .map(|s| {
            let query_url = query_url.clone();
            let key = api_key.map(str::to_string);
            std::thread::spawn(move || {
                let mut results = Vec::new();
                let mut session: Option<String> = None;
                for q in 0..questions {
                    let question = HTTP_QUESTIONS[(s + q) % HTTP_QUESTIONS.len()];
                    let mut body = serde_json::json!({ "query": question });
                    if let Some(id) = &session {
                        body["session_id"] = serde_json::json!(id);
                    }
                    let mut req = ureq::post(&query_url)
                        .set("Content-Type", "application/json")
                        .timeout(std::time::Duration::from_secs(600));
                    if let Some(k) = &key {
                        req = req.set("Authorization", &format!("Bearer {k}"));
                    }
                    let t = Instant::now();
                    let status = match req.send_string(&body.to_string()) {
                        Ok(resp) => {
                            if let Ok(v) = resp.into_json::<serde_json::Value>() {
                                session = v["session_id"].as_str().map(str::to_string);
                            }
                            200
                        }
                        Err(ureq::Error::Status(code, _)) => code,
                        Err(_) => 0,
                    };
                    results.push((status, t.elapsed().as_secs_f64() * 1000.0));
                }
                results
            })
        })
        .collect();
    let results: Vec<(u16, f64)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let wall_s = started.elapsed().as_secs_f64();
    let mut statuses = std::collections::BTreeMap::new();
    for (s, _) in &results {
        *statuses.entry(*s).or_insert(0) += 1;
    }
    let mut ok_ms: Vec<f64> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    ok_ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if ok_ms.is_empty() {
            0.0
        } else {
            ok_ms[((ok_ms.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    let refused: Vec<f64> = results
        .iter()
        .filter(|r| r.0 == 429 || r.0 == 503)
        .map(|r| r.1)
        .collect();
    HttpBenchReport {
        url: url.to_string(),
        sessions,
        questions_per_session: questions,
        requests: results.len(),
        ok: ok_ms.len(),
        refused: refused.len(),
        other_errors: results.len() - ok_ms.len() - refused.len(),
        statuses,
        p50_ms: pct(0.5),
        p95_ms: pct(0.95),
        max_refusal_ms: refused.iter().copied().fold(0.0, f64::max),
        wall_s,
        answered_per_s: ok_ms.len() as f64 / wall_s.max(1e-9),
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// CPU time this process's threads have run, in nanoseconds (the scheduler's own count in
/// /proc/self/task/*/schedstat); 0 where /proc is not available.
fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Resident memory of this process now (VmRSS), in MB; 0 where /proc is not available.
pub fn rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}

/// Peak resident memory of this process (VmHWM), in MB; 0 where /proc is not available.
pub fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

/// One `kB` field of /proc/self/status, in MB.
fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A replay of support questions through the assistant (`novapay bench answers`).
#[derive(Debug, Serialize)]
pub struct AnswerReplayReport {
    pub answer_mode: String,
    pub cache: bool,
    pub answers: usize,
    pub distinct_questions: usize,
    pub seconds: f64,
    pub answers_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Time until the first text a customer sees (first released sentence, or the whole answer).
    pub first_text_p50_ms: f64,
    pub cached_answers: usize,
    pub extractive_answers: usize,
}

/// Asks each question `rounds` times, each time in a new session (no history), in order. Blocking.
pub fn bench_answers(
    assistant: &std::sync::Arc<crate::assistant::Assistant>,
    questions: &[String],
    rounds: usize,
) -> Result<AnswerReplayReport, crate::assistant::AnswerError> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut first = Vec::new();
    let (mut cached, mut extractive) = (0, 0);
    for _ in 0..rounds {
        for q in questions {
            let session = crate::memory::SessionId::new_random();
            let t = Instant::now();
            let mut first_ms: Option<f64> = None;
            let answer = assistant.answer_blocking(&session, q, &mut |text| {
                if first_ms.is_none() && !text.trim().is_empty() {
                    first_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
                }
            })?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            latencies.push(ms);
            first.push(first_ms.unwrap_or(ms));
            cached += answer.cached as usize;
            extractive += answer.extractive() as usize;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize]
        }
    };
    Ok(AnswerReplayReport {
        answer_mode: assistant.answer_mode().to_string(),
        cache: assistant.config.cache.capacity > 0,
        answers: latencies.len(),
        distinct_questions: questions.len(),
        seconds,
        answers_per_s: latencies.len() as f64 / seconds.max(1e-9),
        p50_ms: pct(&mut latencies, 0.5),
        p95_ms: pct(&mut latencies, 0.95),
        first_text_p50_ms: pct(&mut first, 0.5),
        cached_answers: cached,
        extractive_answers: extractive,
    })
}

/// N clients at once against the batching worker (`bench llm --parallel N`).
#[derive(Debug, Serialize)]
pub struct ParallelLlmReport {
    pub clients: usize,
    pub prompt_tokens: usize,
    pub generate_tokens: usize,
    pub threads: usize,
    pub wall_s: f64,
    /// Generated tokens of all clients over the wall time.
    pub aggregate_generation_tokens_per_s: f64,
    pub answers_per_min: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p95: f64,
    pub last_token_ms_p50: f64,
    pub last_token_ms_p95: f64,
    /// Generation with every client answering at once: tokens of all clients timed between the last
    /// client's first token and the first client's last one, over that window (prompt reading left
    /// out: with 500-token prompts and 2 cores, reading the prompts, which does not batch, is most of
    /// the wall time). `None` when the window is empty (one client finished before another began).
    pub decode_window_tokens_per_s: Option<f64>,
    /// Peak resident memory of the process (weights, every client's KV cache, buffers).
    pub peak_rss_mb: f64,
    /// KV cache held at the end (finished conversations' caches are kept for follow-ups).
    pub kv_mb_at_end: f64,
    /// Forward passes by batch size (index = size).
    pub batch_steps: Vec<usize>,
}

/// Tokens per second while every client is answering: the tokens timed within [the latest first
/// token, the earliest last token] over that window's length; `None` when it is empty or holds fewer
/// than two tokens per client.
pub fn decode_window_rate(token_times_ms: &[Vec<f64>]) -> Option<f64> {
    let firsts: Option<Vec<f64>> = token_times_ms.iter().map(|t| t.first().copied()).collect();
    let lasts: Option<Vec<f64>> = token_times_ms.iter().map(|t| t.last().copied()).collect();
    let from = firsts?.into_iter().reduce(f64::max)?;
    let to = lasts?.into_iter().reduce(f64::min)?;
    let inside = token_times_ms
        .iter()
        .flatten()
        .filter(|&&t| t > from && t <= to)
        .count();
    (to > from && inside >= 2 * token_times_ms.len()).then(|| inside as f64 * 1e3 / (to - from))
}

/// `clients` requests submitted at once, each a distinct ~`prompt_tokens` prompt (the text from a
/// different offset) and exactly `generate_tokens` greedy tokens; times from submission.
pub fn bench_llm_parallel(
    handle: &crate::engine::LlmHandle,
    spec: &LlmBenchSpec,
    clients: usize,
) -> Result<ParallelLlmReport, EngineError> {
    use crate::engine::{GenerateRequest, GenerationEvent, Prompt};
    let mut base = handle.tokenizer().encode(spec.prompt_text, false)?;
    if base.is_empty() {
        return Err(EngineError::InvalidInput("empty benchmark prompt".into()));
    }
    while base.len() < spec.prompt_tokens + 64 * clients {
        let again = base.clone();
        base.extend(again);
    }
    let params = SamplingParams {
        max_new_tokens: spec.generate_tokens,
        ignore_eos: true,
        repeat_penalty: 1.0,
        ..SamplingParams::default()
    };
    let run = |ids: Vec<u32>, params: SamplingParams| {
        handle.submit(GenerateRequest {
            prompt: Prompt::Tokens(ids),
            params,
        })
    };
    // Warm-up.
    let mut rx = run(
        base[..32].to_vec(),
        SamplingParams {
            max_new_tokens: 2,
            ..params.clone()
        },
    )?;
    while let Some(ev) = rx.blocking_recv() {
        if let GenerationEvent::Error(e) = ev {
            return Err(e);
        }
    }
    let start = Instant::now();
    let mut receivers = Vec::new();
    for c in 0..clients {
        let ids = base[64 * c..64 * c + spec.prompt_tokens].to_vec();
        receivers.push(run(ids, params.clone())?);
    }
    // Per client: the time of each token (ms from submission) and the completion tokens.
    let results: Vec<Result<(Vec<f64>, usize), EngineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = receivers
            .into_iter()
            .map(|mut rx| {
                s.spawn(move || {
                    let mut times = Vec::new();
                    while let Some(ev) = rx.blocking_recv() {
                        match ev {
                            GenerationEvent::Token(_) => {
                                times.push(start.elapsed().as_secs_f64() * 1e3);
                            }
                            GenerationEvent::Done(s) => {
                                if times.is_empty() {
                                    times.push(start.elapsed().as_secs_f64() * 1e3);
                                }
                                return Ok((times, s.usage.completion_tokens));
                            }
                            GenerationEvent::Error(e) => return Err(e),
                        }
                    }
                    Err(EngineError::Internal("stream ended without Done".into()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(EngineError::Internal("client panicked".into())))
            })
            .collect()
    });
    let wall_s = start.elapsed().as_secs_f64();
    let mut token_times = Vec::new();
    let mut tokens = 0;
    for r in results {
        let (times, n) = r?;
        token_times.push(times);
        tokens += n;
    }
    let mut ttft: Vec<f64> = token_times.iter().map(|t| t[0]).collect();
    let mut last: Vec<f64> = token_times.iter().map(|t| t[t.len() - 1]).collect();
    let decode_window_tokens_per_s = decode_window_rate(&token_times);
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i.min(v.len() - 1)]
    };
    let stats = handle.stats();
    Ok(ParallelLlmReport {
        clients,
        prompt_tokens: spec.prompt_tokens,
        generate_tokens: spec.generate_tokens,
        threads: spec.threads,
        wall_s,
        aggregate_generation_tokens_per_s: tokens as f64 / wall_s,
        answers_per_min: clients as f64 * 60.0 / wall_s,
        ttft_ms_p50: pct(&mut ttft, 0.5),
        ttft_ms_p95: pct(&mut ttft, 0.95),
        last_token_ms_p50: pct(&mut last, 0.5),
        last_token_ms_p95: pct(&mut last, 0.95),
        decode_window_tokens_per_s,
        peak_rss_mb: peak_rss_mb(),
        kv_mb_at_end: stats.kv_bytes.load(std::sync::atomic::Ordering::SeqCst) as f64 / 1048576.0,
        batch_steps: stats
            .batch_steps
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::SeqCst))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::decode_window_rate;

    #[test]
    fn decode_window_counts_only_tokens_while_every_client_answers() {
        // Client a answers from 0 ms every 100 ms; b starts at 1,000 ms (its prompt read meanwhile)
        // and both run until 2,000 ms: the window is (1,000, 2,000], 10 tokens each.
        let a: Vec<f64> = (0..=20).map(|i| i as f64 * 100.0).collect();
        let b: Vec<f64> = (10..=25).map(|i| i as f64 * 100.0).collect();
        let rate = decode_window_rate(&[a.clone(), b]).expect("a window");
        assert!((rate - 20.0).abs() < 1e-9, "{rate}");
        // One client alone: its own rate after its first token.
        assert!((decode_window_rate(std::slice::from_ref(&a)).unwrap() - 10.0).abs() < 1e-9);
        // Disjoint answers: no window.
        let late: Vec<f64> = (30..=40).map(|i| i as f64 * 100.0).collect();
        assert_eq!(decode_window_rate(&[a, late]), None);
        assert_eq!(decode_window_rate(&[vec![]]), None);
    }
}
