//! Seconds per forward + input gradient of each ImageNet classifier on
//! gevaldi's CPU engine and on candle's ops (the reference path), seeded
//! random weights, alternating the two. No assertion: it prints figures.
//!
//! `cargo run --release --example engine_speed -- [batch] [size] [reps] [models…]`
//! (defaults: 8, 224, 3, every classifier; `--no-candle` skips the
//! reference path).

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Module, Tensor, Var};
use gevaldi::engine::Net;
use gevaldi::zoo::{
    self, AlexNet, ConvNext, ConvNextSize, GoogLeNet, ResNet, ResNetDepth, SqueezeNet,
    SqueezeNetVersion,
};

fn frozen<M>(load: impl Fn(candle_nn::VarBuilder) -> candle_core::Result<M>) -> Result<M> {
    let dev = Device::Cpu;
    let (_, vm) = zoo::seeded_varmap(1, &dev, &load)?;
    Ok(load(zoo::frozen(&vm, &dev))?)
}

/// Seconds of one forward + backward to the input.
fn step(run: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>, x: &Var) -> Result<f64> {
    let t = Instant::now();
    let y = run(x.as_tensor())?;
    let g = y.sum_all()?.backward()?;
    let _ = g.get(x.as_tensor()).expect("input gradient");
    Ok(t.elapsed().as_secs_f64())
}

/// A classifier's name and how to build its network.
type Maker = (&'static str, Box<dyn Fn() -> Result<Net>>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    gevaldi::prepare_process();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let no_candle = args.iter().any(|a| a == "--no-candle");
    let mut nums = args.iter().filter_map(|a| a.parse::<usize>().ok());
    let batch = nums.next().unwrap_or(8);
    let size = nums.next().unwrap_or(224);
    let reps = nums.next().unwrap_or(3);
    let wanted: Vec<&String> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err() && !a.starts_with("--"))
        .collect();
    let models: Vec<Maker> = vec![
        (
            "alexnet",
            Box::new(|| Ok(frozen(|vb| AlexNet::load(vb, 1000))?.net().clone())),
        ),
        (
            "googlenet",
            Box::new(|| Ok(frozen(|vb| GoogLeNet::load(vb, 1000, true))?.net().clone())),
        ),
        (
            "squeezenet1_0",
            Box::new(|| {
                Ok(
                    frozen(|vb| SqueezeNet::load(vb, SqueezeNetVersion::V1_0, 1000))?
                        .net()
                        .clone(),
                )
            }),
        ),
        (
            "squeezenet1_1",
            Box::new(|| {
                Ok(
                    frozen(|vb| SqueezeNet::load(vb, SqueezeNetVersion::V1_1, 1000))?
                        .net()
                        .clone(),
                )
            }),
        ),
        (
            "resnet18",
            Box::new(|| {
                Ok(frozen(|vb| ResNet::load(vb, ResNetDepth::R18, 1000))?
                    .net()
                    .clone())
            }),
        ),
        (
            "resnet50",
            Box::new(|| {
                Ok(frozen(|vb| ResNet::load(vb, ResNetDepth::R50, 1000))?
                    .net()
                    .clone())
            }),
        ),
        (
            "convnext_tiny",
            Box::new(|| {
                Ok(frozen(|vb| ConvNext::load(vb, ConvNextSize::Tiny, 1000))?
                    .net()
                    .clone())
            }),
        ),
    ];
    println!(
        "batch {batch}, {size}x{size}, {} threads, median of {reps}",
        rayon::current_num_threads()
    );
    for (name, make) in models {
        if !wanted.is_empty() && !wanted.iter().any(|w| w.as_str() == name) {
            continue;
        }
        let net = make()?;
        let x = Var::from_tensor(&Tensor::randn(
            0f32,
            1.0,
            (batch, 3, size, size),
            &Device::Cpu,
        )?)?;
        let engine = |x: &Tensor| net.forward(x);
        let candle = |x: &Tensor| net.forward_candle(x);
        step(&engine, &x)?; // warm-up (compiles the network)
        let (mut e, mut c) = (vec![], vec![]);
        for _ in 0..reps {
            e.push(step(&engine, &x)?);
            if !no_candle {
                c.push(step(&candle, &x)?);
            }
        }
        let e = median(e);
        if no_candle {
            println!("{name:14} engine {e:7.3} s");
        } else {
            let c = median(c);
            println!(
                "{name:14} engine {e:7.3} s  candle {c:7.3} s  speed-up {:5.1}x",
                c / e
            );
        }
    }
    Ok(())
}
