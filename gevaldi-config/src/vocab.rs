//! The words a `gevaldi.toml` may use, as enums: each enum is the one list
//! of its values. The parser accepts exactly its variants (and names them,
//! in declaration order, when it refuses a value); the library maps each
//! variant to its implementation with an exhaustive `match`, so a new
//! variant does not compile until it has one.

use std::fmt;

/// Declares a closed vocabulary: the enum, its names in a config, and
/// `ALL` in declaration order (the order error messages list them in).
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name a config uses.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Every value's name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text,)+];

            /// The value called `name` in a config, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }

        /// Written as its name (a JSON string), as a config names it.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        /// Read from its name; any other string is an error naming the
        /// names it may be.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Name;
                impl serde::de::Visitor<'_> for Name {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "one of {}", $name::NAMES.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::from_name(v)
                            .ok_or_else(|| E::unknown_variant(v, $name::NAMES))
                    }
                }
                d.deserialize_str(Name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

vocabulary! {
    /// A divergence between the classifiers' predictive distributions
    /// (`divergence = "…"`); the library's `Divergence` computes it.
    pub enum DivergenceKind {
        /// KL(p_1 ‖ p_2), directed.
        Kl = "kl",
        /// KL(p_2 ‖ p_1).
        ReverseKl = "reverse-kl",
        /// KL(p_1 ‖ p_2) + KL(p_2 ‖ p_1).
        Jeffreys = "jeffreys",
        /// The generalised Jensen-Shannon divergence of 2 or more models.
        Js = "js",
        /// Total variation distance.
        Tv = "tv",
    }
}

/// How many models a divergence compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly 2.
    Two,
    /// 2 or more.
    TwoOrMore,
}

impl Arity {
    /// Whether it compares `models` models.
    pub fn accepts(self, models: usize) -> bool {
        match self {
            Arity::Two => models == 2,
            Arity::TwoOrMore => models >= 2,
        }
    }

    /// "exactly 2" or "2 or more".
    pub fn describe(self) -> &'static str {
        match self {
            Arity::Two => "exactly 2",
            Arity::TwoOrMore => "2 or more",
        }
    }
}

impl DivergenceKind {
    /// How many models it compares: the one place this rule is written
    /// (the config checks a pair's `models` with it, the library a
    /// search's classifiers).
    pub fn arity(self) -> Arity {
        match self {
            DivergenceKind::Js => Arity::TwoOrMore,
            DivergenceKind::Kl
            | DivergenceKind::ReverseKl
            | DivergenceKind::Jeffreys
            | DivergenceKind::Tv => Arity::Two,
        }
    }

    /// The largest value it takes between `models` models (uniform `js`
    /// weights, the only ones a config gives), and why: a `max_divergence`
    /// at or above it can never fail. KL's and Jeffreys' come from
    /// [`LOG_PROB_FLOOR`].
    pub fn ceiling(self, models: usize) -> (f64, String) {
        let floor = -LOG_PROB_FLOOR;
        match self {
            DivergenceKind::Kl | DivergenceKind::ReverseKl => (
                floor,
                format!("log-probabilities are clamped at {LOG_PROB_FLOOR}"),
            ),
            DivergenceKind::Jeffreys => (
                2.0 * floor,
                format!("log-probabilities are clamped at {LOG_PROB_FLOOR}"),
            ),
            DivergenceKind::Js => {
                let m = models.max(2);
                (
                    (m as f64).ln(),
                    format!("ln {m}, models with disjoint predictions"),
                )
            }
            DivergenceKind::Tv => (1.0, "disjoint predictions".into()),
        }
    }
}

/// Log-probabilities below this are clamped to it before a divergence is
/// computed (gevaldi's `divergence` module says why); it caps KL at 10⁴
/// nats.
pub const LOG_PROB_FLOOR: f64 = -1e4;

vocabulary! {
    /// The ascent's optimizer (`optimizer = "…"`).
    pub enum OptimizerKind {
        /// Plain gradient ascent.
        Sgd = "sgd",
        /// Adam with its usual defaults.
        Adam = "adam",
    }
}

vocabulary! {
    /// The summary statistic `max_divergence` and `max_set_distance` bound
    /// (`statistic = "…"`); see [`Statistic`](crate::Statistic) for the
    /// value with its quantile.
    pub enum StatisticKind {
        /// The largest value.
        Max = "max",
        /// The mean.
        Mean = "mean",
        /// A quantile, with `quantile = q`.
        Quantile = "quantile",
    }
}

vocabulary! {
    /// A classifier's channel handling (`preprocess.channels`).
    pub enum Channels {
        /// Keep the channels as they are. (Default.)
        Rgb = "rgb",
        /// Reverse a 3-channel input (RGB to BGR, for Caffe-style weights).
        Bgr = "bgr",
        /// Repeat a 1-channel input 3 times.
        GreyToRgb = "grey-to-rgb",
    }
}

vocabulary! {
    /// Whether a model table is a `[classifier.*]` or a `[generator.*]`.
    pub enum ModelKind {
        /// `[classifier.<name>]`.
        Classifier = "classifier",
        /// `[generator.<name>]`.
        Generator = "generator",
    }
}

vocabulary! {
    /// A built-in architecture (`arch = "…"`): classifiers first, then
    /// generators. The library's `zoo` builds each.
    pub enum Architecture {
        /// The MNIST CNN `cnn_a`.
        MnistCnnA = "mnist-cnn-a",
        /// The MNIST CNN `cnn_b`.
        MnistCnnB = "mnist-cnn-b",
        /// The MNIST MLP (the bagging base learner).
        MnistMlp = "mnist-mlp",
        /// torchvision's AlexNet.
        AlexNet = "alexnet",
        /// torchvision's GoogLeNet.
        GoogLeNet = "googlenet",
        /// torchvision's SqueezeNet 1.0.
        SqueezeNet1_0 = "squeezenet1_0",
        /// torchvision's SqueezeNet 1.1.
        SqueezeNet1_1 = "squeezenet1_1",
        /// torchvision's ResNet-18.
        ResNet18 = "resnet18",
        /// torchvision's ResNet-50.
        ResNet50 = "resnet50",
        /// torchvision's ConvNeXt tiny.
        ConvNextTiny = "convnext_tiny",
        /// torchvision's ConvNeXt small.
        ConvNextSmall = "convnext_small",
        /// torchvision's ConvNeXt base.
        ConvNextBase = "convnext_base",
        /// The MNIST VAE.
        MnistVae = "mnist-vae",
        /// The class-conditional MNIST VAE.
        MnistCvae = "mnist-cvae",
        /// BigGAN-deep at 128 × 128.
        BigGanDeep128 = "biggan-deep-128",
        /// BigGAN-deep at 256 × 256.
        BigGanDeep256 = "biggan-deep-256",
        /// BigGAN-deep at 512 × 512.
        BigGanDeep512 = "biggan-deep-512",
    }
}

/// The dataset a built-in architecture's weights were made for
/// ([`Architecture::dataset`]): what its images are and, for a classifier,
/// its classes.
///
/// Not `#[non_exhaustive]`: a new dataset should make every `match` on it
/// (the messages that say what images a classifier takes) a compile error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// MNIST: grey 28 × 28 digits in [0, 1], 10 classes.
    Mnist,
    /// ImageNet-1k: colour images (224 × 224 and normalised for
    /// torchvision's classifiers; in [-1, 1] from BigGAN), 1000 classes.
    ImageNet,
}

impl Dataset {
    /// Its number of classes: 10 for MNIST, 1000 for ImageNet-1k.
    pub fn classes(self) -> usize {
        match self {
            Dataset::Mnist => 10,
            Dataset::ImageNet => 1000,
        }
    }

    /// A `preprocess` table, as TOML, that maps images in [`lo`, `hi`]
    /// (`grey`: of one channel) onto what a built-in classifier of this
    /// dataset takes: the range for MNIST; the range, 3 channels, 224
    /// pixels and ImageNet's mean and std for ImageNet. The default range
    /// [0, 1] is left out. For the messages that refuse a classifier
    /// without `preprocess`.
    pub fn preprocess_from(self, lo: f32, hi: f32, grey: bool) -> String {
        let mut keys = Vec::new();
        if grey && self == Dataset::ImageNet {
            keys.push("channels = \"grey-to-rgb\"".to_string());
        }
        if (lo, hi) != (0.0, 1.0) {
            keys.push(format!("input_range = [{lo}, {hi}]"));
        }
        if self == Dataset::ImageNet {
            keys.push(
                "resize = 224, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]".into(),
            );
        }
        if keys.is_empty() {
            "{}".to_string()
        } else {
            format!("{{ {} }}", keys.join(", "))
        }
    }
}

impl Architecture {
    /// Whether it is a generator that takes a class condition (the cVAE,
    /// BigGAN).
    pub fn is_conditional(self) -> bool {
        use Architecture as A;
        matches!(
            self,
            A::MnistCvae | A::BigGanDeep128 | A::BigGanDeep256 | A::BigGanDeep512
        )
    }

    /// Whether it is a classifier or a generator.
    pub fn kind(self) -> ModelKind {
        use Architecture as A;
        match self {
            A::MnistCnnA
            | A::MnistCnnB
            | A::MnistMlp
            | A::AlexNet
            | A::GoogLeNet
            | A::SqueezeNet1_0
            | A::SqueezeNet1_1
            | A::ResNet18
            | A::ResNet50
            | A::ConvNextTiny
            | A::ConvNextSmall
            | A::ConvNextBase => ModelKind::Classifier,
            A::MnistVae | A::MnistCvae | A::BigGanDeep128 | A::BigGanDeep256 | A::BigGanDeep512 => {
                ModelKind::Generator
            }
        }
    }

    /// The dataset its weights were made for: the images a classifier
    /// takes and its classes, or the images a generator makes.
    pub fn dataset(self) -> Dataset {
        use Architecture as A;
        match self {
            A::MnistCnnA | A::MnistCnnB | A::MnistMlp | A::MnistVae | A::MnistCvae => {
                Dataset::Mnist
            }
            A::AlexNet
            | A::GoogLeNet
            | A::SqueezeNet1_0
            | A::SqueezeNet1_1
            | A::ResNet18
            | A::ResNet50
            | A::ConvNextTiny
            | A::ConvNextSmall
            | A::ConvNextBase
            | A::BigGanDeep128
            | A::BigGanDeep256
            | A::BigGanDeep512 => Dataset::ImageNet,
        }
    }

    /// The number of classes of a classifier (its [`dataset`](Self::dataset)'s),
    /// `None` for a generator.
    ///
    /// The config checks `top_n` against it where every classifier of a
    /// pair is built in; a pair with a classifier registered from Rust is
    /// checked when its trial starts.
    pub fn classes(self) -> Option<usize> {
        match self.kind() {
            ModelKind::Classifier => Some(self.dataset().classes()),
            ModelKind::Generator => None,
        }
    }

    /// Whether it takes `transform_input` (GoogLeNet).
    pub fn takes_transform_input(self) -> bool {
        self == Architecture::GoogLeNet
    }

    /// Whether it takes a `truncation` (BigGAN).
    pub fn takes_truncation(self) -> bool {
        matches!(
            self,
            Architecture::BigGanDeep128 | Architecture::BigGanDeep256 | Architecture::BigGanDeep512
        )
    }
}

/// A range rule on a number, written once and used both by the config
/// (whose errors point at the line) and by the library's `SearchConfig`
/// (built from Rust).
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    ok: fn(f64) -> bool,
    /// What a value must be, in words: "a finite number > 0".
    pub expected: &'static str,
}

impl Rule {
    /// Whether `v` keeps the rule (never a NaN or an infinity).
    pub fn holds(&self, v: f64) -> bool {
        v.is_finite() && (self.ok)(v)
    }
}

/// `lr`: a finite number > 0.
pub const LR: Rule = Rule {
    ok: |v| v > 0.0,
    expected: "a finite number > 0",
};
/// `lambda`, `early_stop.tolerance` and the thresholds: a finite number ≥ 0.
pub const NON_NEGATIVE: Rule = Rule {
    ok: |v| v >= 0.0,
    expected: "a finite number >= 0",
};

/// What a trial is: one kind per kind of config entry. Each kind has its
/// own runner in the library, matched exhaustively (so the enum is not
/// `#[non_exhaustive]`: a new kind does not compile until every match has
/// its arm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrialKind {
    /// A `[[pair]]`: an MDS search of 2 or more classifiers.
    Pair,
    /// An `[[ensemble]]`: the MDS dataset of a bagging ensemble.
    Ensemble,
    /// A `[[tournament]]`: N classifiers ranked by who is right where they
    /// disagree (MAD competition).
    Tournament,
}

impl TrialKind {
    /// `pair`, `ensemble` or `tournament`: the first part of a trial's name.
    pub fn name(self) -> &'static str {
        match self {
            TrialKind::Pair => "pair",
            TrialKind::Ensemble => "ensemble",
            TrialKind::Tournament => "tournament",
        }
    }
}

impl fmt::Display for TrialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A trial of a config: its kind and its entry's `name`. Displayed as the
/// test's name, `pair::<name>`, `ensemble::<name>` or `tournament::<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrialId {
    /// The kind of entry.
    pub kind: TrialKind,
    /// Its `name`.
    pub name: String,
}

impl TrialId {
    /// `pair::<name>`.
    pub fn pair(name: impl Into<String>) -> Self {
        TrialId {
            kind: TrialKind::Pair,
            name: name.into(),
        }
    }

    /// `ensemble::<name>`.
    pub fn ensemble(name: impl Into<String>) -> Self {
        TrialId {
            kind: TrialKind::Ensemble,
            name: name.into(),
        }
    }

    /// `tournament::<name>`.
    pub fn tournament(name: impl Into<String>) -> Self {
        TrialId {
            kind: TrialKind::Tournament,
            name: name.into(),
        }
    }
}

/// The ranking a tournament's rank thresholds read (`ranking = …`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RankingKind {
    /// `mad`: MAD's power iteration on the ratios of wins (the default).
    #[default]
    Mad,
    /// `bradley-terry`: the Bradley–Terry maximum-likelihood strengths.
    BradleyTerry,
}

impl RankingKind {
    /// Every ranking, in the order error messages list them.
    pub const ALL: &'static [RankingKind] = &[RankingKind::Mad, RankingKind::BradleyTerry];

    /// Its name in a config.
    pub fn name(self) -> &'static str {
        match self {
            RankingKind::Mad => "mad",
            RankingKind::BradleyTerry => "bradley-terry",
        }
    }
}

impl fmt::Display for RankingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for TrialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DivergenceKind::ALL {
            assert_eq!(DivergenceKind::from_name(d.name()), Some(*d));
        }
        for a in Architecture::ALL {
            assert_eq!(Architecture::from_name(a.name()), Some(*a));
            assert_eq!(a.classes().is_some(), a.kind() == ModelKind::Classifier);
            // The MNIST architectures are named so, and the conditional
            // ImageNet generators take its 1000 classes.
            assert_eq!(a.name().starts_with("mnist"), a.dataset() == Dataset::Mnist);
        }
        assert_eq!(
            Dataset::ImageNet.preprocess_from(-1.0, 1.0, false),
            "{ input_range = [-1, 1], resize = 224, mean = [0.485, 0.456, 0.406], \
             std = [0.229, 0.224, 0.225] }"
        );
        assert_eq!(
            Dataset::ImageNet.preprocess_from(0.0, 1.0, true),
            "{ channels = \"grey-to-rgb\", resize = 224, mean = [0.485, 0.456, 0.406], \
             std = [0.229, 0.224, 0.225] }"
        );
        assert_eq!(
            Dataset::Mnist.preprocess_from(-1.0, 1.0, false),
            "{ input_range = [-1, 1] }"
        );
        for (a, classes) in [
            (Architecture::MnistMlp, Some(10)),
            (Architecture::ConvNextBase, Some(1000)),
            (Architecture::MnistCvae, None),
        ] {
            assert_eq!(a.classes(), classes, "{a:?}");
        }
        assert_eq!(Channels::from_name("grey"), None);
    }

    #[test]
    fn names_serialise_as_strings_and_read_back() {
        for d in DivergenceKind::ALL {
            let json = serde_json::to_string(d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.name()));
            assert_eq!(serde_json::from_str::<DivergenceKind>(&json).unwrap(), *d);
        }
        assert_eq!(
            serde_json::from_str::<OptimizerKind>("\"adam\"").unwrap(),
            OptimizerKind::Adam
        );
        let e = serde_json::from_str::<DivergenceKind>("\"hellinger\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown variant `hellinger`, expected one of `kl`, `reverse-kl`"),
            "{e}"
        );
        assert!(serde_json::from_str::<DivergenceKind>("3").is_err());
    }

    #[test]
    fn arity_and_rules() {
        assert!(DivergenceKind::Js.arity().accepts(3));
        assert!(!DivergenceKind::Kl.arity().accepts(3));
        assert_eq!(DivergenceKind::Js.ceiling(2).0, 2f64.ln());
        assert_eq!(DivergenceKind::Js.ceiling(3).0, 3f64.ln());
        assert_eq!(DivergenceKind::Tv.ceiling(2).0, 1.0);
        assert_eq!(DivergenceKind::Jeffreys.ceiling(2).0, 2e4);
        assert!(!LR.holds(0.0) && LR.holds(1e-3) && !LR.holds(f64::NAN));
        assert!(NON_NEGATIVE.holds(0.0) && !NON_NEGATIVE.holds(f64::INFINITY));
    }

    #[test]
    fn trial_ids_display_as_test_names() {
        assert_eq!(TrialId::pair("a-vs-b").to_string(), "pair::a-vs-b");
        assert_eq!(TrialId::ensemble("bag").to_string(), "ensemble::bag");
        assert_eq!(
            TrialId::tournament("mnist").to_string(),
            "tournament::mnist"
        );
    }
}
