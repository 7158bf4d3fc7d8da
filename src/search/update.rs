//! The update of z: SGD, or Adam's step on candle's ops or as one kernel.

use candle_core::{DType, Tensor, Var};

use super::Optimizer;
use crate::engine::{adam_step, search_kernels_apply, Engine};

/// The optimizer's state between steps, and its step.
pub(super) struct Update {
    optimizer: Optimizer,
    lr: f64,
    /// Adam's moments: apart (candle's ops), or packed after z for the
    /// kernel (`[z | m | v]`, the kernel's last output).
    state: Option<State>,
}

enum State {
    Apart(Tensor, Tensor),
    Packed(Tensor),
}

impl Update {
    pub(super) fn new(optimizer: Optimizer, lr: f64) -> Self {
        Update {
            optimizer,
            lr,
            state: None,
        }
    }

    /// Moves z by the step `t` (from 1) of the ascent along `grad`.
    /// Adam's step is one kernel where the engine's CUDA kernels run (an
    /// f32 z on a CUDA device under `auto`) and on the CPU under `auto`
    /// (its CPU twin, a loop): the same f32 operations in the same order
    /// as on candle's ops, so the same bits on the CPU. Which, is decided
    /// at the first step and kept with the moments.
    pub(super) fn step(&mut self, z: &Var, grad: &Tensor, t: usize) -> candle_core::Result<()> {
        let fused = match &self.state {
            Some(State::Packed(_)) => true,
            Some(State::Apart(..)) => false,
            None => {
                grad.dtype() == DType::F32 && search_kernels_apply(z.as_tensor(), Engine::current())
            }
        };
        self.step_with(z, grad, t, fused)
    }

    /// [`Self::step`], on the kernel where `fused`, else on candle's ops.
    fn step_with(
        &mut self,
        z: &Var,
        grad: &Tensor,
        t: usize,
        fused: bool,
    ) -> candle_core::Result<()> {
        let Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
        } = self.optimizer
        else {
            return z.set(&(z.as_tensor() + grad.affine(self.lr, 0.0)?)?);
        };
        let zt = z.as_tensor();
        let t = t as i32;
        let (bc1, bc2) = (1.0 / (1.0 - beta1.powi(t)), 1.0 / (1.0 - beta2.powi(t)));
        if fused {
            let n = zt.elem_count();
            let state = match self.state.take() {
                Some(State::Packed(s)) => s,
                _ => Tensor::cat(
                    &[
                        zt.flatten_all()?,
                        Tensor::zeros(2 * n, DType::F32, zt.device())?,
                    ],
                    0,
                )?,
            };
            // As candle's affine takes them: f64 cast to f32.
            let hyper = [
                beta1,
                1.0 - beta1,
                beta2,
                1.0 - beta2,
                bc1,
                bc2,
                epsilon,
                self.lr,
            ]
            .map(|v| v as f32);
            let hyper = Tensor::new(&hyper, zt.device())?;
            let state = adam_step(&grad.flatten_all()?, &state, &hyper)?;
            z.set(&state.narrow(0, 0, n)?.reshape(zt.dims())?)?;
            self.state = Some(State::Packed(state));
            return Ok(());
        }
        let (m, v) = match self.state.take() {
            Some(State::Apart(m, v)) => (m, v),
            _ => (grad.zeros_like()?, grad.zeros_like()?),
        };
        let m = (m.affine(beta1, 0.0)? + grad.affine(1.0 - beta1, 0.0)?)?;
        let v = (v.affine(beta2, 0.0)? + grad.sqr()?.affine(1.0 - beta2, 0.0)?)?;
        let m_hat = m.affine(bc1, 0.0)?;
        let v_hat = v.affine(bc2, 0.0)?;
        let update = (m_hat / (v_hat.sqrt()? + epsilon)?)?.affine(self.lr, 0.0)?;
        self.state = Some(State::Apart(m, v));
        z.set(&(zt + update)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::Update;
    use crate::search::Optimizer;

    /// Adam's kernel (its CPU twin, `auto` on the CPU) moves z to the same
    /// bits as candle's ops over several steps, from gradients of every
    /// sign and size, zeros included. Checked to fail with the bias
    /// corrections swapped.
    #[test]
    fn the_kernel_takes_candles_steps_bit_for_bit() {
        let dev = Device::Cpu;
        let z0: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        let grads: Vec<Tensor> = (0..5)
            .map(|s| {
                let g: Vec<f32> = (0..24)
                    .map(|i| match (i + s) % 5 {
                        0 => 0.0,
                        1 => 1e-6 * i as f32,
                        2 => -3.5 * (i as f32).cos(),
                        3 => 250.0,
                        _ => -(i as f32 * 0.11 + s as f32).exp(),
                    })
                    .collect();
                Tensor::from_vec(g, (4, 6), &dev).unwrap()
            })
            .collect();
        let run = |fused: bool| {
            let z = Var::from_tensor(&Tensor::from_vec(z0.clone(), (4, 6), &dev).unwrap()).unwrap();
            let mut update = Update::new(Optimizer::adam(), 0.05);
            for (t, g) in grads.iter().enumerate() {
                update.step_with(&z, g, t + 1, fused).unwrap();
            }
            z.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (kernel, ops) = (run(true), run(false));
        assert_ne!(kernel, z0);
        for (i, (a, b)) in kernel.iter().zip(&ops).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "z[{i}]: {a} by the kernel, {b} by candle's ops"
            );
        }
    }

    /// Six ascent steps against `torch.optim.Adam(lr=0.05, betas=(0.9,
    /// 0.999), eps=1e-8, maximize=True)` in f64, fed the gradients torch
    /// saw on L(z) = Σ −w (z − c)² + sin z (the script below): candle's
    /// ops in f64 to 1e-12, the kernel and candle's ops in f32 to 1e-6.
    /// Agreed when written.
    ///
    /// ```python
    /// z = torch.tensor([0.5, -1.0, 2.0, 0.0, 3e-3, -4.0]).requires_grad_()
    /// c = torch.tensor([1.0, 1.0, -1.0, 0.0, 0.0, 2.0])
    /// w = torch.tensor([1.0, 10.0, 0.1, 1.0, 100.0, 1e-3])
    /// opt = torch.optim.Adam([z], lr=0.05, betas=(0.9, 0.999), eps=1e-8, maximize=True)
    /// for t in range(6):
    ///     opt.zero_grad(); ((-(z - c) ** 2 * w).sum() + torch.sin(z).sum()).backward()
    ///     grads.append(z.grad.tolist()); opt.step()
    /// ```
    #[test]
    fn adam_takes_torchs_steps() {
        const GRADS: [[f64; 6]; 6] = [
            [
                1.8775825618903728,
                40.54030230586814,
                -1.0161468365471424,
                1.0,
                0.399995500003375,
                -0.6416436208636119,
            ],
            [
                1.7525245227312969,
                39.581683089700526,
                -0.9601808319067969,
                0.8987502614199558,
                -9.601403921191714,
                -0.6029023771415902,
            ],
            [
                1.6256418036580493,
                38.62227798983493,
                -0.9033971138140657,
                0.7954445645023366,
                -2.443988229891067,
                -0.5627103276490457,
            ],
            [
                1.4972681107359431,
                37.66245961479192,
                -0.8460024063918086,
                0.6905298417203428,
                4.492189718110157,
                -0.5212512490724938,
            ],
            [
                1.3677945567683154,
                36.702624818956274,
                -0.7882181084990283,
                0.5845995873575519,
                7.266297929003324,
                -0.4787334857566582,
            ],
            [
                1.2376744605668044,
                35.7431949258356,
                -0.7302790999997191,
                0.47842357310285505,
                6.184906141116289,
                -0.4353908553171499,
            ],
        ];
        const TORCH_Z: [f64; 6] = [
            0.7960526569576393,
            -0.7010216086993118,
            1.7030110810400003,
            0.29230296769812925,
            -0.010546675023114481,
            -4.296420631357735,
        ];
        let z0 = [0.5, -1.0, 2.0, 0.0, 3e-3, -4.0];
        let dev = Device::Cpu;
        for (dtype, fused, tol) in [
            (DType::F64, false, 1e-12),
            (DType::F32, true, 1e-6),
            (DType::F32, false, 1e-6),
        ] {
            let z = Var::from_tensor(&Tensor::new(&z0, &dev).unwrap().to_dtype(dtype).unwrap())
                .unwrap();
            let mut update = Update::new(Optimizer::adam(), 0.05);
            for (t, g) in GRADS.iter().enumerate() {
                let g = Tensor::new(g, &dev).unwrap().to_dtype(dtype).unwrap();
                update.step_with(&z, &g, t + 1, fused).unwrap();
            }
            let got = z
                .as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for (i, (a, b)) in got.iter().zip(TORCH_Z).enumerate() {
                assert!(
                    (a - b).abs() <= tol,
                    "{dtype:?} fused={fused} z[{i}]: {a}, torch {b}"
                );
            }
        }
    }
}
