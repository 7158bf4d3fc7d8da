//! The search's own backward: the ops with a backward of their own
//! (everything that joins candle's graph through [`attach`](super::attach):
//! a built-in network, BigGAN, the search's head, log p(z)), recorded as
//! they run and walked in reverse by the search, instead of candle's
//! graph.
//!
//! candle's backward visits every node of its graph and, for every edge,
//! makes a zero tensor and adds the edge's gradient to it; and every op
//! attached to its graph hands its output over as a copy. For a search
//! whose chain is all such ops (the MNIST fixtures' VAE and CNNs: five
//! ops), that bookkeeping was about as many launches on a GPU as the
//! models' own backward. While a [`Recording`] is on, on the thread that
//! runs the chain, [`attach`](super::attach) records the op (its inputs,
//! its output and its backward) and returns the output itself, untracked
//! by candle; [`tracked`] tells the ops that such an output is part of
//! the chain, as `track_op` tells them for candle's graph.
//!
//! A recording is used only where it is closed: every recorded op's
//! inputs are the latent z or outputs of ops recorded before it, and
//! every tensor the search differentiates (the generator's output, each
//! classifier's logits, the divergence, log p(z)) is a recorded output.
//! Any candle op between them (a user's model, preprocessing, a reshape
//! before a network) leaves a tensor that is neither, whose gradient
//! would be lost: the search then runs the step again on candle's graph
//! ([`crate::search`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use candle_core::{Tensor, TensorId};

use super::Pullback;

/// One recorded op.
struct Entry {
    inputs: Vec<TensorId>,
    output: TensorId,
    back: Pullback,
}

/// The ops recorded while a chain ran, in the order they ran. (Hidden: the
/// search's, public for the benches.)
#[derive(Default)]
pub struct Recording {
    entries: Vec<Entry>,
    outputs: HashSet<TensorId>,
}

thread_local! {
    static TAPE: RefCell<Option<Recording>> = const { RefCell::new(None) };
}

/// Whether `x` is part of a chain being differentiated: tracked by
/// candle's graph, or the output of an op being recorded on this thread.
pub(crate) fn tracked(x: &Tensor) -> bool {
    x.track_op()
        || TAPE.with(|t| {
            t.borrow()
                .as_ref()
                .is_some_and(|r| r.outputs.contains(&x.id()))
        })
}

/// Whether a recording is on, on this thread.
pub(crate) fn recording() -> bool {
    TAPE.with(|t| t.borrow().is_some())
}

/// Records the op `inputs → out` with its backward `back` when a recording
/// is on (then `Ok(out)`, untracked); else hands both back.
#[allow(clippy::result_large_err)]
pub(crate) fn record(
    inputs: &[&Tensor],
    out: Tensor,
    back: Pullback,
) -> Result<Tensor, (Tensor, Pullback)> {
    TAPE.with(|t| match t.borrow_mut().as_mut() {
        Some(r) => {
            r.outputs.insert(out.id());
            r.entries.push(Entry {
                inputs: inputs.iter().map(|x| x.id()).collect(),
                output: out.id(),
                back,
            });
            Ok(out)
        }
        None => Err((out, back)),
    })
}

/// Runs `f` with a recording on, on this thread, and returns what it
/// recorded with its result (the recording ends however `f` ends).
/// (Hidden: the search's, public for the benches.)
pub fn record_while<T>(f: impl FnOnce() -> T) -> (T, Recording) {
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            TAPE.with(|t| t.borrow_mut().take());
        }
    }
    TAPE.with(|t| *t.borrow_mut() = Some(Recording::default()));
    let off = Off;
    let out = f();
    let recording = TAPE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    drop(off);
    (out, recording)
}

/// `out`, made from `x` by a candle op whose backward is `back`, recorded
/// as an op of its own where a recording is on and `x` is part of the
/// chain: how a model's small joins (a reshape, a constant appended)
/// stay in the recording. Elsewhere `out` as it is (candle's graph tracks
/// it where `x` is tracked).
pub(crate) fn record_op(
    x: &Tensor,
    out: Tensor,
    back: impl Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
) -> Tensor {
    if !recording() || !tracked(x) {
        return out;
    }
    let back: Pullback = Box::new(move |g| Ok(vec![back(g)?]));
    record(&[x], out, back).unwrap_or_else(|(out, _)| out)
}

/// `x` reshaped to `dims` (a view where `x` is contiguous), recorded where
/// `x` is part of a recorded chain (the backward reshapes the gradient
/// back, as candle's does): a model's input reshape, `[B, 784]` to
/// `[B, 1, 28, 28]`.
pub(crate) fn reshape(x: &Tensor, dims: &[usize]) -> candle_core::Result<Tensor> {
    let out = x.reshape(dims)?;
    let shape = x.dims().to_vec();
    Ok(record_op(x, out, move |g| g.reshape(shape.as_slice())))
}

/// `x` `[B, d]` and a constant `c` `[B, k]` joined along the columns,
/// recorded where `x` is part of a recorded chain and `c` is not (the
/// backward is the gradient's first d columns, as candle's is): a
/// conditional model's input, z and its class condition.
pub(crate) fn join_constant(x: &Tensor, c: &Tensor) -> candle_core::Result<Tensor> {
    let out = Tensor::cat(&[x, c], 1)?;
    if tracked(c) {
        return Ok(out);
    }
    let d = x.dim(1)?;
    Ok(record_op(x, out, move |g| g.narrow(1, 0, d)))
}

/// Runs `f` with this thread's recording (if any) set aside: for an op
/// whose own forward runs other ops with a backward of its own (BigGAN's
/// decode), so that none of them joins the recording; the op itself is
/// then recorded as one.
pub(crate) fn paused<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Recording>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(r) = self.0.take() {
                TAPE.with(|t| *t.borrow_mut() = Some(r));
            }
        }
    }
    let _restore = Restore(TAPE.with(|t| t.borrow_mut().take()));
    f()
}

impl Recording {
    /// Whether the recording holds the whole chain from `z` to `ends`:
    /// every op's inputs are `z` or outputs of ops before it, and every
    /// one of `ends` is an op's output (see the module's docs).
    pub fn closed(&self, z: &Tensor, ends: &[&Tensor]) -> bool {
        let mut known = HashSet::from([z.id()]);
        for e in &self.entries {
            if !e.inputs.iter().all(|i| known.contains(i)) {
                return false;
            }
            known.insert(e.output);
        }
        ends.iter().all(|t| self.outputs.contains(&t.id()))
    }

    /// The gradient of `z` from `seeds` (each an op's output and its
    /// gradient), the ops' backwards run in reverse order, each op's
    /// gradient the sum of what its consumers gave; `None` where no seed
    /// depends on `z`. Each op's backward, and what it kept, is dropped
    /// once it has run: the backward holds less and less. A seed must have
    /// its output's shape and type (else an error naming both: one of
    /// another shape made the CPU kernels' backward panic, "index out of
    /// bounds").
    pub fn gradient(
        mut self,
        seeds: Vec<(&Tensor, Tensor)>,
        z: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        for (t, g) in &seeds {
            if t.dims() != g.dims() || t.dtype() != g.dtype() {
                candle_core::bail!(
                    "gevaldi-tape: the gradient seeding an output of shape {:?} ({:?}) has shape \
                     {:?} ({:?}): a seed must have its output's shape and type",
                    t.dims(),
                    t.dtype(),
                    g.dims(),
                    g.dtype()
                );
            }
        }
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        let add = |grads: &mut HashMap<TensorId, Tensor>, id: TensorId, g: Tensor| {
            let sum = match grads.remove(&id) {
                Some(before) => (before + g)?,
                None => g,
            };
            grads.insert(id, sum);
            Ok::<_, candle_core::Error>(())
        };
        for (t, g) in seeds {
            add(&mut grads, t.id(), g)?;
        }
        while let Some(e) = self.entries.pop() {
            let Some(g) = grads.remove(&e.output) else {
                continue;
            };
            let inputs = (e.back)(&g)?;
            if inputs.len() != e.inputs.len() {
                candle_core::bail!(
                    "gevaldi-tape: a backward gave {} gradients for {} inputs",
                    inputs.len(),
                    e.inputs.len()
                );
            }
            for (&id, gi) in e.inputs.iter().zip(inputs) {
                add(&mut grads, id, gi)?;
            }
        }
        Ok(grads.remove(&z.id()))
    }

    /// How many ops it recorded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    /// `x` times `k`, as an op with a backward of its own (computed
    /// outside candle's graph, as the engine's ops are).
    fn scaled(x: &Tensor, k: f64) -> Tensor {
        let out = x.detach().affine(k, 0.0).unwrap();
        let back: Pullback = Box::new(move |g| Ok(vec![g.affine(k, 0.0)?]));
        super::super::attach(&[x], out, back).unwrap()
    }

    /// A seed of another shape or type than its output is an error naming
    /// both (one of another shape made the CPU kernels' backward panic,
    /// "index out of bounds", through a network's recording).
    #[test]
    fn a_seed_that_does_not_fit_its_output_is_an_error() {
        use crate::engine::NetBuilder;
        let dev = Device::Cpu;
        let w = Tensor::ones((6, 4, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let conv = candle_nn::Conv2d::new(w, None, Default::default());
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.conv2d(x, &conv);
        let y = b.relu(y);
        let net = b.build(y);
        let z =
            Var::from_tensor(&Tensor::ones((2, 4, 6, 6), candle_core::DType::F32, &dev).unwrap())
                .unwrap();
        for seed in [
            Tensor::ones((2, 10), candle_core::DType::F32, &dev).unwrap(),
            Tensor::ones((2, 6, 4, 4), candle_core::DType::F64, &dev).unwrap(),
        ] {
            let (y, rec) = record_while(|| candle_core::Module::forward(&net, z.as_tensor()));
            let y = y.unwrap();
            assert!(rec.closed(z.as_tensor(), &[&y]));
            let err = rec
                .gradient(vec![(&y, seed.clone())], z.as_tensor())
                .unwrap_err();
            let want = format!(
                "the gradient seeding an output of shape [2, 6, 4, 4] (F32) has shape {:?} ({:?})",
                seed.dims(),
                seed.dtype()
            );
            assert!(err.to_string().contains(&want), "{err}");
        }
        let (y, rec) = record_while(|| candle_core::Module::forward(&net, z.as_tensor()));
        let y = y.unwrap();
        let g = rec
            .gradient(vec![(&y, y.ones_like().unwrap())], z.as_tensor())
            .unwrap();
        assert_eq!(g.unwrap().dims(), [2, 4, 6, 6]);
    }

    /// y = 2z feeds a = 3y and b = 5y, ops recorded in turn: the gradient
    /// of a + b is 2·3 + 2·5 per element, each consumer's gradient summed.
    #[test]
    fn a_closed_recording_gives_the_chain_s_gradient() {
        let z = Var::from_tensor(&t(&[1.0, -2.0])).unwrap();
        let ((y, a, b), rec) = record_while(|| {
            let y = scaled(z.as_tensor(), 2.0);
            (y.clone(), scaled(&y, 3.0), scaled(&y, 5.0))
        });
        assert_eq!(rec.len(), 3);
        assert!(
            !a.track_op() && !b.track_op(),
            "recorded outputs leave candle's graph"
        );
        assert!(rec.closed(z.as_tensor(), &[&y, &a, &b]));
        let ones = t(&[1.0, 1.0]);
        let g = rec
            .gradient(vec![(&a, ones.clone()), (&b, ones)], z.as_tensor())
            .unwrap()
            .unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), [16.0, 16.0]);
        // Nothing recorded outside a recording: candle's graph instead.
        let c = scaled(z.as_tensor(), 3.0);
        assert!(c.track_op() && !recording());
    }

    /// A candle op between recorded ops, or an end that no recorded op
    /// made, leaves the recording open: its gradient would be lost.
    #[test]
    fn a_candle_op_in_the_chain_leaves_the_recording_open() {
        let z = Var::from_tensor(&t(&[1.0, -2.0])).unwrap();
        // z · 1 by candle, then a recorded op: that op's input is neither
        // z nor a recorded output.
        let (y, rec) = record_while(|| scaled(&z.as_tensor().affine(1.0, 0.0).unwrap(), 2.0));
        assert!(!rec.closed(z.as_tensor(), &[&y]));
        // A recorded op, then a candle op: the end is not recorded.
        let ((y, end), rec) = record_while(|| {
            let y = scaled(z.as_tensor(), 2.0);
            let end = (&y + 1.0).unwrap();
            (y, end)
        });
        assert!(rec.closed(z.as_tensor(), &[&y]));
        assert!(!rec.closed(z.as_tensor(), &[&y, &end]));
        assert!(
            !tracked(&end),
            "an op on a recorded output after the recording"
        );
        // A reshape and a constant joined on are recorded ops of their own.
        let c = t(&[7.0, 7.0]).reshape((2, 1)).unwrap();
        let ((y, j), rec) = record_while(|| {
            let y = reshape(&scaled(z.as_tensor(), 2.0), &[2, 1]).unwrap();
            let j = join_constant(&y, &c).unwrap();
            (y, j)
        });
        assert_eq!(rec.len(), 3);
        assert!(rec.closed(z.as_tensor(), &[&y, &j]));
        let g = rec
            .gradient(
                vec![(&j, t(&[1.0, 10.0, 100.0, 1000.0]).reshape((2, 2)).unwrap())],
                z.as_tensor(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), [2.0, 200.0]);
    }
}
