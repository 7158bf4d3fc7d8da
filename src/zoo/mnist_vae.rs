//! The MNIST VAE, unconditional or class-conditional.

use candle_core::{Device, Tensor};
use candle_nn::{linear, Linear, Module, VarBuilder};

use super::layers::{frozen, seeded_varmap};
use crate::engine::{Activation, Net, NetBuilder};
use crate::model::Generator;

/// Shape of an MNIST VAE: MLP encoder and decoder with two hidden layers.
#[derive(Clone, Debug, PartialEq)]
pub struct MnistVaeConfig {
    /// Latent dimension d. (Default: `8`.)
    pub latent: usize,
    /// Width of the hidden layers. (Default: `256`.)
    pub hidden: usize,
    /// `Some(C)` for a conditional VAE: a one-hot label of C classes is
    /// concatenated to the encoder's input and to the decoder's input.
    /// (Default: `None`.)
    pub conditions: Option<usize>,
}

impl Default for MnistVaeConfig {
    fn default() -> Self {
        MnistVaeConfig {
            latent: 8,
            hidden: 256,
            conditions: None,
        }
    }
}

impl MnistVaeConfig {
    /// The conditional VAE of the fixtures, `mnist-cvae`: conditioned on the
    /// 10 digit classes, with a 4-dimensional latent. (With 8 dimensions the
    /// latent also carries the label, and its prior samples followed their
    /// condition less often: 85% against 97%, by cnn_a.)
    pub fn conditional() -> Self {
        MnistVaeConfig {
            latent: 4,
            conditions: Some(10),
            ..Self::default()
        }
    }
}

/// A VAE of 28×28 greyscale digits in [0, 1], with a standard-normal prior.
///
/// The decoder g(z, c) maps `[B, d]` (and a condition `[B, C]`) to
/// `sigmoid(logits)` of shape `[B, 1, 28, 28]`; the encoder maps images to the
/// mean and log-variance of q(z | x, c).
///
/// Tensor names (h = hidden, d = latent, C = conditions or 0):
/// `encoder.fc1.{weight,bias}` `[h, 784 + C]`, `encoder.fc2` `[h, h]`,
/// `encoder.mu` `[d, h]`, `encoder.logvar` `[d, h]`,
/// `decoder.fc1` `[h, d + C]`, `decoder.fc2` `[h, h]`, `decoder.out` `[784, h]`.
#[derive(Clone, Debug)]
pub struct MnistVae {
    enc_fc1: Linear,
    enc_fc2: Linear,
    enc_mu: Linear,
    enc_logvar: Linear,
    /// The decoder up to its logits `[B, 784]`.
    decoder_logits: Net,
    /// The decoder with its sigmoid, to images `[B, 1, 28, 28]`.
    decoder: Net,
    cfg: MnistVaeConfig,
}

impl MnistVae {
    /// Loads the weights from `vb` (e.g. a safetensors file).
    pub fn load(vb: VarBuilder, cfg: &MnistVaeConfig) -> candle_core::Result<Self> {
        let (h, d, c) = (cfg.hidden, cfg.latent, cfg.conditions.unwrap_or(0));
        let enc = vb.pp("encoder");
        let dec = vb.pp("decoder");
        let dec_fc1 = linear(d + c, h, dec.pp("fc1"))?;
        let dec_fc2 = linear(h, h, dec.pp("fc2"))?;
        let dec_out = linear(h, 784, dec.pp("out"))?;
        let mut b = NetBuilder::new();
        let x = b.input();
        let x = b.linear_layer(x, &dec_fc1);
        let x = b.relu(x);
        let x = b.linear_layer(x, &dec_fc2);
        let x = b.relu(x);
        let logits = b.linear_layer(x, &dec_out);
        let decoder_logits = b.clone().build(logits);
        let x = b.act(logits, Activation::Sigmoid);
        let image = b.reshape(x, &[1, 28, 28]);
        Ok(MnistVae {
            enc_fc1: linear(784 + c, h, enc.pp("fc1"))?,
            enc_fc2: linear(h, h, enc.pp("fc2"))?,
            enc_mu: linear(h, d, enc.pp("mu"))?,
            enc_logvar: linear(h, d, enc.pp("logvar"))?,
            decoder_logits,
            decoder: b.build(image),
            cfg: cfg.clone(),
        })
    }

    /// A frozen model with seeded random weights.
    pub fn random(cfg: &MnistVaeConfig, seed: u64, device: &Device) -> candle_core::Result<Self> {
        let (_, varmap) = seeded_varmap(seed, device, |vb| Self::load(vb, cfg))?;
        Self::load(frozen(&varmap, device), cfg)
    }

    /// The decoder with its sigmoid, from `[B, d + C]` (z and the
    /// condition side by side) to images, as the [engine](crate::engine)
    /// runs it.
    pub fn decoder_net(&self) -> &Net {
        &self.decoder
    }

    /// The architecture's settings.
    pub fn config(&self) -> &MnistVaeConfig {
        &self.cfg
    }

    /// The mean and log-variance of q(z | x, c), each `[B, d]`, for images
    /// `[B, 1, 28, 28]` or `[B, 784]`.
    pub fn encode(
        &self,
        x: &Tensor,
        condition: Option<&Tensor>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let x = self.with_condition(&x.flatten_from(1)?, condition)?;
        let h = self.enc_fc1.forward(&x)?.relu()?;
        let h = self.enc_fc2.forward(&h)?.relu()?;
        Ok((self.enc_mu.forward(&h)?, self.enc_logvar.forward(&h)?))
    }

    /// The decoder's logits `[B, 784]` (before the sigmoid), for training
    /// with a Bernoulli likelihood.
    pub fn decode_logits(
        &self,
        z: &Tensor,
        condition: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.decoder_logits
            .forward(&self.with_condition(z, condition)?)
    }

    fn with_condition(&self, x: &Tensor, c: Option<&Tensor>) -> candle_core::Result<Tensor> {
        match (self.cfg.conditions, c) {
            (None, None) => Ok(x.clone()),
            (Some(_), Some(c)) => crate::engine::join_constant(x, &c.to_dtype(x.dtype())?),
            (Some(n), None) => {
                candle_core::bail!("this conditional VAE needs a condition [B, {n}]")
            }
            (None, Some(_)) => candle_core::bail!("this VAE is unconditional: give no condition"),
        }
    }
}

impl Generator for MnistVae {
    fn latent_dim(&self) -> usize {
        self.cfg.latent
    }

    fn num_conditions(&self) -> Option<usize> {
        self.cfg.conditions
    }

    fn encode(
        &self,
        x: &Tensor,
        condition: Option<&Tensor>,
    ) -> Option<candle_core::Result<Tensor>> {
        Some(MnistVae::encode(self, x, condition).map(|(mu, _)| mu))
    }

    fn decode(&self, z: &Tensor, condition: Option<&Tensor>) -> candle_core::Result<Tensor> {
        self.decoder.forward(&self.with_condition(z, condition)?)
    }

    fn taped(&self) -> bool {
        true
    }
}
