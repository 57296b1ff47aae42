//! Where the embedding's time goes, operator by operator, and how close it runs to
//! the machine's matrix rates: ONNX Runtime's profiler trace (a JSON array of
//! events, one per kernel run) summed per operator type, with the arithmetic of
//! each matrix product from its shapes; and the rate of a single `MatMul` (fp32)
//! and `MatMulInteger` (int8) on a one-node graph built here, the peak those
//! operators reach on this machine. `triage bench --profile` prints both.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{DynValue, Tensor};
use serde::Serialize;

use super::EmbedError;

/// One operator type's share of the profiled runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OpCost {
    pub op: String,
    /// Kernel time summed over every node of this type and every run, µs.
    pub us: f64,
    pub calls: usize,
    /// Multiply-adds x 2 of the int8 matrix products among them.
    pub int8_ops: f64,
    /// Multiply-adds x 2 of the fp32 matrix products among them (attention's scores
    /// and context inside a fused attention node count here).
    pub fp32_flops: f64,
}

/// Kernel time per operator type, most expensive first, and the time of whole runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TraceTotals {
    pub ops: Vec<OpCost>,
    /// `model_run` events summed, µs: the runs as the session timed them.
    pub run_us: f64,
    pub runs: usize,
}

/// Matrix products with int8 operands: the quantised projections, as ONNX
/// Runtime's graph optimiser leaves them (it fuses `DynamicQuantizeLinear` +
/// `MatMulInteger` + the scale into `DynamicQuantizeMatMul` or
/// `MatMulIntegerToFloat`).
pub fn is_int8_matmul(op: &str) -> bool {
    matches!(
        op,
        "MatMulInteger" | "DynamicQuantizeMatMul" | "MatMulIntegerToFloat" | "QGemm"
    )
}

/// Matrix products in fp32 (attention's, and any projection left unquantised).
pub fn is_fp32_matmul(op: &str) -> bool {
    matches!(op, "MatMul" | "FusedMatMul" | "Gemm")
}

/// The shapes of an event's inputs or outputs: `[{"float": [1, 115, 384]}, ...]`.
fn shapes(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .map(|list| {
            list.iter()
                .filter_map(|t| t.as_object()?.values().next()?.as_array().cloned())
                .map(|dims| dims.iter().filter_map(serde_json::Value::as_f64).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// 2 x (output elements) x (the inner dimension: the last of the first input).
fn matmul_flops(inputs: &[Vec<f64>], outputs: &[Vec<f64>]) -> f64 {
    match (inputs.first().and_then(|a| a.last()), outputs.first()) {
        (Some(k), Some(out)) => 2.0 * k * out.iter().product::<f64>(),
        _ => 0.0,
    }
}

/// A fused attention node's (projection, attention) arithmetic. The trace leaves
/// out prepacked weights, so the projection's width is the bias's length (Q, K and
/// V side by side): 2 x batch x tokens x hidden x width; then the scores (Q K^T)
/// and the context (scores x V), each 2 x batch x tokens^2 x hidden.
fn attention_flops(inputs: &[Vec<f64>], outputs: &[Vec<f64>]) -> (f64, f64) {
    let (Some(x), Some(out)) = (inputs.first(), outputs.first()) else {
        return (0.0, 0.0);
    };
    let [batch, tokens, hidden] = x[..] else {
        return (0.0, 0.0);
    };
    let width = inputs
        .iter()
        .skip(1)
        .find(|s| s.len() == 1 && s[0] > hidden)
        .map_or(0.0, |s| s[0]);
    let out_hidden = out.last().copied().unwrap_or(0.0);
    (
        2.0 * batch * tokens * hidden * width,
        4.0 * batch * tokens * tokens * out_hidden,
    )
}

/// (int8 ops, fp32 FLOP) of one kernel event, from its shapes.
fn event_arithmetic(op: &str, args: &serde_json::Value) -> (f64, f64) {
    let inputs = shapes(&args["input_type_shape"]);
    let outputs = shapes(&args["output_type_shape"]);
    match op {
        // Fused attention runs the Q/K/V projection (int8 in `QAttention`, fp32 in
        // `Attention`) and the fp32 scores and context in one kernel: its time cannot
        // be split between the two rates, its arithmetic counts in each.
        "QAttention" => attention_flops(&inputs, &outputs),
        "Attention" => {
            let (projection, attention) = attention_flops(&inputs, &outputs);
            (0.0, projection + attention)
        }
        op if is_int8_matmul(op) => (matmul_flops(&inputs, &outputs), 0.0),
        op if is_fp32_matmul(op) => (0.0, matmul_flops(&inputs, &outputs)),
        _ => (0.0, 0.0),
    }
}

/// Sums an ONNX Runtime profile (`SessionBuilder::with_profiling`): every `Node`
/// event whose name ends in `_kernel_time`, by `args.op_name`.
pub fn parse_trace(json: &str) -> Result<TraceTotals, EmbedError> {
    let events: Vec<serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| EmbedError::Inference(format!("reading the profile: {e}")))?;
    let mut by_op: BTreeMap<String, OpCost> = BTreeMap::new();
    let mut totals = TraceTotals::default();
    for e in &events {
        let dur = e["dur"].as_f64().unwrap_or(0.0);
        let name = e["name"].as_str().unwrap_or("");
        match e["cat"].as_str() {
            Some("Node") if name.ends_with("_kernel_time") => {
                let op = e["args"]["op_name"].as_str().unwrap_or("?");
                let cost = by_op.entry(op.to_string()).or_insert_with(|| OpCost {
                    op: op.to_string(),
                    ..OpCost::default()
                });
                cost.us += dur;
                cost.calls += 1;
                let (int8, fp32) = event_arithmetic(op, &e["args"]);
                cost.int8_ops += int8;
                cost.fp32_flops += fp32;
            }
            Some("Session") if name == "model_run" => {
                totals.run_us += dur;
                totals.runs += 1;
            }
            _ => {}
        }
    }
    totals.ops = by_op.into_values().collect();
    totals
        .ops
        .sort_by(|a, b| b.us.total_cmp(&a.us).then(a.op.cmp(&b.op)));
    Ok(totals)
}

// A minimal protobuf writer for a one-node ONNX graph (onnx.proto field numbers).

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_varint(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// ONNX element types.
const FLOAT: u64 = 1;
const UINT8: u64 = 2;
const INT8: u64 = 3;
const INT32: u64 = 6;

/// ValueInfoProto: a named tensor of `elem` with `dims`.
fn value_info(name: &str, elem: u64, dims: &[usize]) -> Vec<u8> {
    let mut shape = Vec::new();
    for &d in dims {
        let mut dim = Vec::new();
        field_varint(&mut dim, 1, d as u64);
        field_bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    field_varint(&mut tensor, 1, elem);
    field_bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    field_bytes(&mut ty, 1, &tensor);
    let mut v = Vec::new();
    field_bytes(&mut v, 1, name.as_bytes());
    field_bytes(&mut v, 2, &ty);
    v
}

/// TensorProto: a constant with raw little-endian data.
fn initializer(name: &str, elem: u64, dims: &[usize], raw: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        field_varint(&mut t, 1, d as u64);
    }
    field_varint(&mut t, 2, elem);
    field_bytes(&mut t, 8, name.as_bytes());
    field_bytes(&mut t, 9, raw);
    t
}

/// `Y = A x B` for A `[m, k]` (an input) and a constant B `[k, n]`: fp32 `MatMul`,
/// or int8 `MatMulInteger` (A uint8, B int8, Y int32), as the quantised graph
/// computes its projections.
pub fn matmul_graph(m: usize, k: usize, n: usize, int8: bool) -> Vec<u8> {
    let (op, a_elem, b_elem, y_elem, b_raw) = if int8 {
        let raw: Vec<u8> = (0..k * n).map(|i| (i % 251) as u8 ^ 0x55).collect();
        ("MatMulInteger", UINT8, INT8, INT32, raw)
    } else {
        let raw: Vec<u8> = (0..k * n)
            .flat_map(|i| (((i % 97) as f32 - 48.0) / 97.0).to_le_bytes())
            .collect();
        ("MatMul", FLOAT, FLOAT, FLOAT, raw)
    };
    let mut node = Vec::new();
    field_bytes(&mut node, 1, b"A");
    field_bytes(&mut node, 1, b"B");
    field_bytes(&mut node, 2, b"Y");
    field_bytes(&mut node, 3, b"mm");
    field_bytes(&mut node, 4, op.as_bytes());
    let mut graph = Vec::new();
    field_bytes(&mut graph, 1, &node);
    field_bytes(&mut graph, 2, b"peak");
    field_bytes(&mut graph, 5, &initializer("B", b_elem, &[k, n], &b_raw));
    field_bytes(&mut graph, 11, &value_info("A", a_elem, &[m, k]));
    field_bytes(&mut graph, 12, &value_info("Y", y_elem, &[m, n]));
    let mut opset = Vec::new();
    field_bytes(&mut opset, 1, b"");
    field_varint(&mut opset, 2, 13);
    let mut model = Vec::new();
    field_varint(&mut model, 1, 8);
    field_bytes(&mut model, 2, b"triage");
    field_bytes(&mut model, 7, &graph);
    field_bytes(&mut model, 8, &opset);
    model
}

fn ort_err(e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Inference(e.to_string())
}

/// What the peak measurement found, operations per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Peak {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Sessions side by side, and intra-op threads each.
    pub sessions: usize,
    pub threads: usize,
    pub fp32_flops: f64,
    pub int8_ops: f64,
}

/// The rate of `sessions` one-node sessions of `threads` threads each, side by
/// side (as the service's workers run), multiplying `[m, k] x [k, n]` for about
/// `for_each` per operator: fp32 `MatMul` and int8 `MatMulInteger`.
pub fn measure_peak(
    env: &Environment,
    (m, k, n): (usize, usize, usize),
    sessions: usize,
    threads: usize,
    for_each: Duration,
) -> Result<Peak, EmbedError> {
    let rate = |int8: bool| -> Result<f64, EmbedError> {
        let graph = matmul_graph(m, k, n, int8);
        let mut made = Vec::new();
        for _ in 0..sessions.max(1) {
            let session = Session::builder(env)
                .map_err(ort_err)?
                .with_intra_threads(threads.max(1))
                .map_err(ort_err)?
                .commit_from_memory(&graph)
                .map_err(ort_err)?;
            made.push(session);
        }
        let runs = std::thread::scope(|scope| -> Result<usize, EmbedError> {
            let handles: Vec<_> = made
                .iter_mut()
                .map(|session| {
                    scope.spawn(move || -> Result<usize, EmbedError> {
                        // The input is made once: the clock times the product only.
                        let input: DynValue = if int8 {
                            let a: Vec<u8> = (0..m * k).map(|i| (i % 200) as u8).collect();
                            Tensor::from_array(([m, k], a)).map_err(ort_err)?.into_dyn()
                        } else {
                            let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 13.0).collect();
                            Tensor::from_array(([m, k], a)).map_err(ort_err)?.into_dyn()
                        };
                        let run_once = |session: &mut Session| -> Result<(), EmbedError> {
                            session.run(ort::inputs!["A" => &input]).map_err(ort_err)?;
                            Ok(())
                        };
                        for _ in 0..3 {
                            run_once(session)?;
                        }
                        let started = Instant::now();
                        let mut runs = 0;
                        while started.elapsed() < for_each {
                            run_once(session)?;
                            runs += 1;
                        }
                        Ok(runs)
                    })
                })
                .collect();
            let mut total = 0;
            for h in handles {
                total += h
                    .join()
                    .map_err(|_| EmbedError::Inference("a peak thread panicked".into()))??;
            }
            Ok(total)
        })?;
        Ok(runs as f64 * 2.0 * (m * k * n) as f64 / for_each.as_secs_f64())
    };
    Ok(Peak {
        m,
        k,
        n,
        sessions,
        threads,
        fp32_flops: rate(false)?,
        int8_ops: rate(true)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"[
      {"cat":"Session","pid":1,"tid":1,"dur":900,"ts":1,"ph":"X","name":"model_run","args":{}},
      {"cat":"Node","pid":1,"tid":1,"dur":300,"ts":2,"ph":"X","name":"/l0/q/MatMul_quant_kernel_time",
       "args":{"op_name":"MatMulInteger","input_type_shape":[{"uint8":[1,10,384]},{"int8":[384,384]}],"output_type_shape":[{"int32":[1,10,384]}]}},
      {"cat":"Node","pid":1,"tid":1,"dur":0,"ts":2,"ph":"X","name":"/l0/q/MatMul_quant_fence_before","args":{"op_name":"MatMulInteger"}},
      {"cat":"Node","pid":1,"tid":1,"dur":200,"ts":3,"ph":"X","name":"/l0/att/MatMul_kernel_time",
       "args":{"op_name":"MatMul","input_type_shape":[{"float":[1,12,10,32]},{"float":[1,12,32,10]}],"output_type_shape":[{"float":[1,12,10,10]}]}},
      {"cat":"Node","pid":1,"tid":1,"dur":100,"ts":4,"ph":"X","name":"/l0/Softmax_kernel_time","args":{"op_name":"Softmax"}},
      {"cat":"Node","pid":1,"tid":1,"dur":50,"ts":5,"ph":"X","name":"/l1/Softmax_kernel_time","args":{"op_name":"Softmax"}},
      {"cat":"Node","pid":1,"tid":1,"dur":120,"ts":6,"ph":"X","name":"layer0_Attention_quant_kernel_time",
       "args":{"op_name":"QAttention","input_type_shape":[{"uint8":[1,10,384]},{"float":[1152]},{"float":[]},{"float":[1152]},{"int32":[1,10]},{"uint8":[]},{"int8":[1152]}],"output_type_shape":[{"float":[1,10,384]}]}}
    ]"#;

    #[test]
    fn a_trace_is_summed_per_operator_with_the_arithmetic_of_each_matrix_product() {
        let t = parse_trace(TRACE).unwrap();
        assert_eq!((t.run_us, t.runs), (900.0, 1));
        let ops: Vec<(&str, f64, usize)> = t
            .ops
            .iter()
            .map(|o| (o.op.as_str(), o.us, o.calls))
            .collect();
        assert_eq!(
            ops,
            [
                ("MatMulInteger", 300.0, 1),
                ("MatMul", 200.0, 1),
                ("Softmax", 150.0, 2),
                ("QAttention", 120.0, 1)
            ],
            "kernel events only (no fences), most expensive first"
        );
        let arithmetic: Vec<(f64, f64)> =
            t.ops.iter().map(|o| (o.int8_ops, o.fp32_flops)).collect();
        assert_eq!(
            arithmetic,
            [
                (2.0 * 384.0 * 10.0 * 384.0, 0.0),
                (0.0, 2.0 * 32.0 * 12.0 * 10.0 * 10.0),
                (0.0, 0.0),
                // Q, K and V (the bias's 1,152 wide) in int8; scores and context in fp32.
                (2.0 * 10.0 * 384.0 * 1152.0, 2.0 * 2.0 * 10.0 * 10.0 * 384.0)
            ]
        );
        assert!(parse_trace("not json").is_err());
    }

    #[test]
    fn varints_and_a_graph_are_encoded_as_protobuf() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let g = matmul_graph(2, 3, 4, true);
        // ir_version 8 first, and the operator's name inside.
        assert_eq!(&g[..2], &[0x08, 8]);
        assert!(g.windows(13).any(|w| w == b"MatMulInteger"));
    }
}
