//! Models by name: the builders registered from Rust for tables without
//! `arch`, and the built-in architectures of tables with one.

use candle_core::Device;

use crate::config::{Architecture, Config, ModelDecl, ModelKind, ModelTable, PreprocessDecl};
use crate::error::{Error, Result};
use crate::model::{Classifier, Generator};
use crate::preprocess::{Preprocess, Preprocessed};
use crate::zoo;

/// Builds a model registered from Rust when a trial needs it.
pub(super) type Factory<T> = Box<dyn Fn(&ModelTable, &Device) -> Result<Box<T>> + Send + Sync>;

/// A function that builds a model registered from Rust, in either shape
/// `gevaldi::main!` accepts: `Fn(&ModelTable, &Device) -> gevaldi::Result<M>`
/// (it sees the model's table) or `Fn(&Device) -> gevaldi::Result<M>`.
/// `Args` (`fn(&ModelTable, &Device)` or `fn(&Device)`) tells them apart
/// and is inferred for functions; a closure needs its argument types
/// written out (`|t: &ModelTable, d: &Device| …`).
#[doc(hidden)]
pub trait BuildModel<M, Args>: Send + Sync + 'static {
    /// Builds the model of `table` on `device`.
    fn build(&self, table: &ModelTable, device: &Device) -> Result<M>;
}

impl<M, F> BuildModel<M, fn(&ModelTable, &Device)> for F
where
    F: Fn(&ModelTable, &Device) -> Result<M> + Send + Sync + 'static,
{
    fn build(&self, table: &ModelTable, device: &Device) -> Result<M> {
        self(table, device)
    }
}

impl<M, F> BuildModel<M, fn(&Device)> for F
where
    F: Fn(&Device) -> Result<M> + Send + Sync + 'static,
{
    fn build(&self, _: &ModelTable, device: &Device) -> Result<M> {
        self(device)
    }
}

/// Models registered from Rust under the names a `gevaldi.toml` uses for
/// tables without `arch`.
#[derive(Default)]
pub struct Registry {
    pub(super) classifiers: Vec<(String, Factory<dyn Classifier>)>,
    pub(super) generators: Vec<(String, Factory<dyn Generator>)>,
    /// Tables without `arch` need no registration; building one fails.
    without_rust_models: bool,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry for loading a config where its Rust models are not at
    /// hand (`cargo gevaldi` lists trials and rebuilds reports of every
    /// config): a table without `arch` needs no registration, and a trial
    /// that needs such a model fails, saying that it runs under
    /// `cargo test`.
    pub fn without_rust_models() -> Self {
        Registry {
            without_rust_models: true,
            ..Self::default()
        }
    }

    /// Registers the classifier `name`, built by `build` when a trial needs
    /// it. [`Registry::classifier_with_table`] gives it its TOML table too.
    pub fn classifier<C: Classifier + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&Device) -> Result<C> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_classifier(name, build)
    }

    /// Registers the classifier `name`, built by `build` from its
    /// `[classifier.<name>]` table (its `weights`, resolved, and its own
    /// keys) when a trial needs it.
    pub fn classifier_with_table<C: Classifier + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&ModelTable, &Device) -> Result<C> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_classifier(name, build)
    }

    /// Registers the generator `name`, built by `build` when a trial needs
    /// it. [`Registry::generator_with_table`] gives it its TOML table too.
    pub fn generator<G: Generator + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&Device) -> Result<G> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_generator(name, build)
    }

    /// Registers the generator `name`, built by `build` from its
    /// `[generator.<name>]` table when a trial needs it.
    pub fn generator_with_table<G: Generator + 'static>(
        &mut self,
        name: &str,
        build: impl Fn(&ModelTable, &Device) -> Result<G> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_generator(name, build)
    }

    /// Either shape of classifier builder (what `gevaldi::main!` calls).
    #[doc(hidden)]
    pub fn register_classifier<C: Classifier + 'static, Args>(
        &mut self,
        name: &str,
        build: impl BuildModel<C, Args>,
    ) -> &mut Self {
        let factory: Factory<dyn Classifier> = Box::new(move |t, d| {
            build
                .build(t, d)
                .map(|c| Box::new(c) as Box<dyn Classifier>)
        });
        self.classifiers.push((name.to_string(), factory));
        self
    }

    /// Either shape of generator builder (what `gevaldi::main!` calls).
    #[doc(hidden)]
    pub fn register_generator<G: Generator + 'static, Args>(
        &mut self,
        name: &str,
        build: impl BuildModel<G, Args>,
    ) -> &mut Self {
        let factory: Factory<dyn Generator> =
            Box::new(move |t, d| build.build(t, d).map(|g| Box::new(g) as Box<dyn Generator>));
        self.generators.push((name.to_string(), factory));
        self
    }
}

/// Refuses a config with a table without `arch` that `registry` does not
/// build.
pub(super) fn check_registry(config: &Config, registry: &Registry) -> Result<()> {
    if registry.without_rust_models {
        return Ok(());
    }
    let check = |decls: &[ModelDecl], registered: Vec<&str>, kind: ModelKind| -> Result<()> {
        for (i, name) in registered.iter().enumerate() {
            if registered[..i].contains(name) {
                return Err(Error::setting(
                    format!("{kind}.{name}"),
                    "registered twice from Rust",
                    "one registration per name (the first one would be the one built)",
                ));
            }
        }
        for d in decls.iter().filter(|d| d.builtin.is_none()) {
            if !registered.contains(&d.name.as_str()) {
                return Err(Error::setting(
                    format!("{kind}.{}", d.name),
                    format!(
                        "a table without `arch` ({}:{})",
                        config.path.display(),
                        d.line
                    ),
                    format!("a {kind} registered from Rust under the name `{}`", d.name),
                ));
            }
        }
        Ok(())
    };
    let classifiers = registry.classifiers.iter().map(|(n, _)| n.as_str());
    check(
        &config.classifiers,
        classifiers.collect(),
        ModelKind::Classifier,
    )?;
    let generators = registry.generators.iter().map(|(n, _)| n.as_str());
    check(
        &config.generators,
        generators.collect(),
        ModelKind::Generator,
    )
}

impl Registry {
    /// The classifier `decl`, behind its `preprocess` if it has one.
    pub(super) fn build_classifier(
        &self,
        config: &Config,
        decl: &ModelDecl,
        device: &Device,
    ) -> Result<Box<dyn Classifier>> {
        let model = load(config, decl, &self.classifiers, device, |arch, vb| {
            zoo::classifier_with(arch, vb, decl.transform_input)
        })?;
        Ok(match &decl.preprocess {
            None => model,
            Some(p) => Box::new(Preprocessed {
                inner: model,
                preprocess: preprocess(p),
            }),
        })
    }

    /// The generator `decl`.
    pub(super) fn build_generator(
        &self,
        config: &Config,
        decl: &ModelDecl,
        device: &Device,
    ) -> Result<Box<dyn Generator>> {
        load(config, decl, &self.generators, device, |arch, vb| {
            zoo::generator_with(arch, vb, decl.truncation)
        })
    }
}

/// A declared model: its built-in architecture loaded from its weights
/// file, or the builder registered from Rust under its name.
fn load<T: ?Sized>(
    config: &Config,
    decl: &ModelDecl,
    registered: &[(String, Factory<T>)],
    device: &Device,
    build: impl FnOnce(Architecture, candle_nn::VarBuilder) -> candle_core::Result<Box<T>>,
) -> Result<Box<T>> {
    let name = &decl.name;
    match &decl.builtin {
        Some((arch, weights)) => zoo::load_file(weights, name, device, |vb| build(*arch, vb)),
        None => match registered.iter().find(|(n, _)| n == name) {
            // A bare candle error (the function's `?`) names neither the
            // model nor its table: say which, where and from which file.
            Some((_, factory)) => factory(&decl.table, device).map_err(|e| match e {
                Error::Candle(cause) => Error::Build {
                    kind: decl.table.kind(),
                    model: name.clone(),
                    path: config.path.clone(),
                    line: decl.line,
                    weights: decl.table.weights.clone(),
                    cause,
                },
                other => other,
            }),
            None => Err(Error::setting(
                format!("{}.{name}", decl.table.kind()),
                format!(
                    "a table without `arch` ({}:{})",
                    config.path.display(),
                    decl.line
                ),
                "a model registered from Rust, which only the `cargo test` harness of \
                 `gevaldi::main!` builds",
            )),
        },
    }
}

/// The [`Preprocess`] a config declares (validated by the config).
fn preprocess(p: &PreprocessDecl) -> Preprocess {
    let default = Preprocess::default();
    Preprocess {
        input_range: p.input_range.unwrap_or(default.input_range),
        resize: p.resize,
        channels: p.channels.unwrap_or(default.channels),
        mean: p.mean.clone(),
        std: p.std.clone(),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use crate::suite::{Registry, Suite};
    use crate::zoo::{self, Arch};

    /// Regression: `googlenet` always re-normalised its input as
    /// torchvision's pretrained weights expect (`transform_input=True`),
    /// so a GoogLeNet trained from `googlenet(weights=None)`, which does
    /// not, silently saw other inputs. `transform_input = false` builds it
    /// without; the default stays the pretrained weights'.
    #[test]
    fn googlenet_takes_transform_input_from_its_table() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let (_, varmap) =
            zoo::seeded_varmap(7, &dev, |vb| zoo::classifier(Arch::GoogLeNet, vb)).unwrap();
        varmap.save(dir.path().join("g.safetensors")).unwrap();
        let vae = zoo::mnist_fixtures_dir().join("vae.safetensors");
        let text = format!(
            "[generator.vae]\narch = \"mnist-vae\"\nweights = {vae:?}\n\n\
             [classifier.pretrained]\narch = \"googlenet\"\nweights = \"g.safetensors\"\n\
             preprocess = {{}}\n\n\
             [classifier.plain]\narch = \"googlenet\"\nweights = \"g.safetensors\"\n\
             transform_input = false\npreprocess = {{}}\n\n\
             [[pair]]\nname = \"p\"\nmodels = [\"pretrained\", \"plain\"]\ngenerator = \"vae\"\n"
        );
        let path = dir.path().join("gevaldi.toml");
        std::fs::write(&path, text).unwrap();
        let suite = Suite::load(&path, Registry::new()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &dev).unwrap();
        let logits = |name: &str| {
            let m = suite.classifier(name).unwrap();
            m.logits(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let reference = |transform: bool| {
            let vb = zoo::frozen(&varmap, &dev);
            let m = zoo::GoogLeNet::load(vb, 1000, transform).unwrap();
            crate::Classifier::logits(&m, &x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        // Within 1e-4 of the largest logit (seeded weights give small ones).
        let close = |a: &[f32], b: &[f32]| {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-4 * scale)
        };
        let (pretrained, plain) = (logits("pretrained"), logits("plain"));
        assert!(close(&pretrained, &reference(true)));
        assert!(close(&plain, &reference(false)));
        assert!(
            !close(&plain, &pretrained),
            "transform_input changed nothing"
        );
    }
}
