//! Runs networks described in JSON through `gevaldi::engine::NetBuilder`
//! on each engine path (`auto`, `generic`, `candle`) in f32 and f64, and
//! writes each output and the input gradient of Σ y·r to a safetensors
//! file: the Rust half of `bench/engine_torch_reference.py`, which writes
//! the spec and the weights and compares with PyTorch in float64.
//!
//! ```text
//! cargo run --release --example net_spec -- SPEC.json WEIGHTS.safetensors OUT.safetensors ERRORS.json
//! ```
//!
//! The spec: `{"cases": [{"name", "input", "r", "nodes": [{"op", "in": [ids], …}]}]}`,
//! node ids counting the input as 0 (a conv's stride, padding and
//! dilation one number or `[rows, columns]`); `input`, `r` and the weights name
//! tensors of the weights file. A case that fails (or panics) on a path is
//! written to ERRORS.json with its message, keyed `<name>.<path>.<dtype>`.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Module, Tensor, Var};
use gevaldi::engine::{
    Activation, Conv2dSettings, ConvTranspose2dSettings, NetBuilder, NodeId, Pool2dSettings,
};
use serde_json::Value;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, weights, out_path, errors_path] = args.as_slice() else {
        bail!("usage: net_spec SPEC.json WEIGHTS.safetensors OUT.safetensors ERRORS.json");
    };
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(spec)?)?;
    let ws = candle_core::safetensors::load(weights, &candle_core::Device::Cpu)?;
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut errors = serde_json::Map::new();
    let cases = spec["cases"].as_array().context("no `cases` in the spec")?;
    for case in cases {
        let name = case["name"].as_str().context("a case without a name")?;
        for (dtype, dname) in [(DType::F32, "f32"), (DType::F64, "f64")] {
            for engine in ["auto", "generic", "candle"] {
                let key = format!("{name}.{engine}.{dname}");
                // Read each time a net runs; this process has one thread
                // of its own.
                std::env::set_var(gevaldi::engine::ENGINE_VAR, engine);
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(case, &ws, dtype)
                }));
                let message = match run {
                    Ok(Ok((y, gx))) => {
                        out.insert(format!("{key}.y"), y);
                        out.insert(format!("{key}.gx"), gx);
                        continue;
                    }
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                        format!("panicked: {}", msg.unwrap_or_default())
                    }
                };
                errors.insert(key, Value::String(message));
            }
        }
    }
    candle_core::safetensors::save(&out, out_path)?;
    std::fs::write(errors_path, serde_json::to_string_pretty(&errors)?)?;
    Ok(())
}

/// The output and the input gradient of Σ y·r of one case, in `dt`.
fn run(case: &Value, ws: &HashMap<String, Tensor>, dt: DType) -> Result<(Tensor, Tensor)> {
    let tensor = |k: &str| -> Result<Tensor> {
        let t = ws.get(k).with_context(|| format!("no tensor `{k}`"))?;
        Ok(t.to_dtype(dt)?)
    };
    let optional = |k: &Value| k.as_str().map(tensor).transpose();
    let size = |n: &Value, k: &str, default: usize| {
        n.get(k)
            .and_then(Value::as_u64)
            .map_or(default, |v| v as usize)
    };
    let mut b = NetBuilder::new();
    let mut ids: Vec<NodeId> = vec![b.input()];
    for n in case["nodes"].as_array().context("a case without nodes")? {
        let ins = n["in"]
            .as_array()
            .context("a node without inputs")?
            .iter()
            .map(|i| ids[i.as_u64().unwrap_or(u64::MAX) as usize])
            .collect::<Vec<_>>();
        let weight = |k: &str| tensor(n[k].as_str().unwrap_or_default());
        // A setting is one number for both axes, or [rows, columns].
        let axes = |k: &str, default: usize| match n[k].as_array() {
            Some(v) => {
                let at = |i: usize| v.get(i).and_then(Value::as_u64).map(|v| v as usize);
                [at(0).unwrap_or(default), at(1).unwrap_or(default)]
            }
            None => [size(n, k, default); 2],
        };
        // A pool's settings: kernel k, stride s (the kernel where not
        // given), padding p, dilation d, ceil, cip (count_include_pad).
        let pool = || {
            let kernel = axes("k", 2);
            Pool2dSettings {
                kernel,
                stride: if n["s"].is_null() {
                    kernel
                } else {
                    axes("s", 1)
                },
                padding: axes("p", 0),
                dilation: axes("d", 1),
                ceil_mode: n["ceil"].as_bool().unwrap_or(false),
                count_include_pad: n["cip"].as_bool().unwrap_or(true),
            }
        };
        let id = match n["op"].as_str().unwrap_or_default() {
            "conv" => {
                let settings = Conv2dSettings {
                    stride: axes("stride", 1),
                    padding: axes("padding", 0),
                    dilation: axes("dilation", 1),
                    groups: size(n, "groups", 1),
                };
                let bias = optional(&n["b"])?;
                b.conv2d_with(ins[0], &weight("w")?, bias.as_ref(), settings)
            }
            "convT" => {
                let settings = ConvTranspose2dSettings {
                    stride: axes("stride", 1),
                    padding: axes("padding", 0),
                    output_padding: axes("output_padding", 0),
                    dilation: axes("dilation", 1),
                };
                let bias = optional(&n["b"])?;
                b.conv_transpose2d_with(ins[0], &weight("w")?, bias.as_ref(), settings)
            }
            "linear" => b.linear(ins[0], &weight("w")?, optional(&n["b"])?.as_ref()),
            "affine" => b.affine(ins[0], &weight("scale")?, &weight("shift")?),
            "relu" => b.act(ins[0], Activation::Relu),
            "sigmoid" => b.act(ins[0], Activation::Sigmoid),
            "tanh" => b.act(ins[0], Activation::Tanh),
            "gelu" => b.act(ins[0], Activation::GeluErf),
            "silu" => b.act(ins[0], Activation::Silu),
            "hardswish" => b.act(ins[0], Activation::Hardswish),
            "hardsigmoid" => b.act(ins[0], Activation::Hardsigmoid),
            "hardtanh" => {
                let bound = |k: &str| {
                    n[k].as_f64()
                        .with_context(|| format!("hardtanh without {k}"))
                };
                b.act(
                    ins[0],
                    Activation::Hardtanh(bound("min")? as f32, bound("max")? as f32),
                )
            }
            "leaky" => {
                let slope = n["slope"].as_f64().context("leaky without slope")?;
                b.act(ins[0], Activation::LeakyRelu(slope as f32))
            }
            "maxpool" => b.max_pool2d_with(ins[0], pool()),
            "avgpool" => b.avg_pool2d_with(ins[0], pool()),
            "upsample" => b.upsample_nearest2d(ins[0], size(n, "scale", 2)),
            "aap" => b.adaptive_avg_pool2d(ins[0], size(n, "oh", 1), size(n, "ow", 1)),
            "flatten" => b.flatten(ins[0]),
            "reshape" => {
                let dims = n["dims"].as_array().context("reshape without dims")?;
                let dims: Vec<usize> = dims
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|v| v as usize)
                    .collect();
                b.reshape(ins[0], &dims)
            }
            "concat" => b.concat(&ins),
            "narrow" => b.narrow(
                ins[0],
                size(n, "dim", 1),
                size(n, "start", 0),
                size(n, "len", 0),
            ),
            "concat_dim" => b.concat_dim(&ins, size(n, "dim", 1)),
            "constant" => b.constant(&weight("value")?),
            "shuffle" => b.channel_shuffle(ins[0], size(n, "groups", 0)),
            "add" => b.add(ins[0], ins[1]),
            "mul" => b.mul(ins[0], ins[1]),
            "attention" => {
                let scale = n["scale"].as_f64().context("attention without scale")?;
                b.attention(ins[0], ins[1], ins[2], scale as f32)
            }
            "ln" => {
                let eps = n["eps"].as_f64().context("ln without eps")?;
                b.layer_norm(ins[0], &weight("w")?, &weight("b")?, eps)
            }
            op => bail!("unknown op `{op}`"),
        };
        ids.push(id);
    }
    let net = b.build(*ids.last().expect("the input"));
    let x = Var::from_tensor(&tensor(case["input"].as_str().unwrap_or_default())?)?;
    let r = tensor(case["r"].as_str().unwrap_or_default())?;
    let y = net.forward(x.as_tensor())?;
    let grads = (&y * r)?.sum_all()?.backward()?;
    let gx = grads.get(x.as_tensor()).context("no input gradient")?;
    Ok((y.to_dtype(DType::F64)?, gx.to_dtype(DType::F64)?))
}
