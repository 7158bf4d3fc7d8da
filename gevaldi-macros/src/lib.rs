//! Procedural macros of [gevaldi](https://docs.rs/gevaldi), re-exported by
//! that crate; depend on `gevaldi`, not on this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::{Path, PathBuf};

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, Expr, Ident, LitStr, Token};

/// Generates the `main` of a cargo test target that runs a `gevaldi.toml`:
/// one test per `[[pair]]`.
///
/// ```ignore
/// // tests/gevaldi.rs, with `[[test]] name = "gevaldi"  harness = false`
/// gevaldi::main!("gevaldi.toml");
///
/// // with classifiers or generators of your own, under the names the TOML
/// // gives to tables without `arch`:
/// gevaldi::main!(
///     "gevaldi.toml",
///     // Fn(&ModelTable, &Device) -> gevaldi::Result<impl Classifier>, or Fn(&Device) -> …
///     // (a closure needs its argument types: |t: &ModelTable, d: &Device| …)
///     classifiers = { "mine" => my_crate::load_mine },
///     generators = { "gan" => my_crate::load_gan },      // … impl Generator
///     allocator = "system",                              // optional: keep the system allocator
/// );
/// ```
///
/// A registration function receives its table as a
/// [`ModelTable`](https://docs.rs/gevaldi-config/latest/gevaldi_config/struct.ModelTable.html)
/// (`gevaldi::config::ModelTable`): its `weights`, resolved against the
/// TOML's directory, and its own keys.
///
/// The path is relative to the crate's `CARGO_MANIFEST_DIR` (or, failing
/// that, to the directory of the file that calls the macro). The binary
/// holds only that relative path and finds the TOML at run time under
/// `CARGO_MANIFEST_DIR` (set by `cargo test` and `cargo nextest`), else
/// under the current directory. The TOML is read and validated at compile
/// time: every schema mistake becomes a compile
/// error quoting `file:line:column` and the key, and cargo rebuilds the test
/// when the TOML changes. A table without `arch` that is not registered here,
/// or a registered name the TOML does not declare without `arch`, is a
/// compile error too.
///
/// Unless `allocator = "system"` is given (or gevaldi's `mimalloc` feature is
/// off), the test binary uses mimalloc as its global allocator.
#[proc_macro]
pub fn main(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    match syn::parse::<MainInput>(input).and_then(expand) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            // A `main` as well, so that the only errors are ours.
            let errors = e.to_compile_error();
            quote!(#errors fn main() {}).into()
        }
    }
}

struct Registration {
    name: LitStr,
    build: Expr,
}

impl Parse for Registration {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: LitStr = input.parse()?;
        input.parse::<Token![=>]>()?;
        let build: Expr = input.parse()?;
        Ok(Registration { name, build })
    }
}

struct MainInput {
    path: LitStr,
    classifiers: Vec<Registration>,
    generators: Vec<Registration>,
    system_allocator: bool,
}

impl Parse for MainInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let path: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the path of a gevaldi.toml as a string literal, e.g. \
                 `gevaldi::main!(\"gevaldi.toml\")`",
            )
        })?;
        let mut out = MainInput {
            path,
            classifiers: Vec::new(),
            generators: Vec::new(),
            system_allocator: false,
        };
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            let k = key.to_string();
            if seen.contains(&k) {
                return Err(syn::Error::new(key.span(), format!("`{k}` is given twice")));
            }
            seen.push(k.clone());
            match k.as_str() {
                "classifiers" | "generators" => {
                    let content;
                    braced!(content in input);
                    let regs: Punctuated<Registration, Token![,]> =
                        content.parse_terminated(Registration::parse, Token![,])?;
                    let regs = regs.into_iter().collect();
                    if k == "classifiers" {
                        out.classifiers = regs;
                    } else {
                        out.generators = regs;
                    }
                }
                "allocator" => {
                    let v: LitStr = input.parse()?;
                    match v.value().as_str() {
                        "system" => out.system_allocator = true,
                        "mimalloc" => out.system_allocator = false,
                        other => {
                            return Err(syn::Error::new(
                                v.span(),
                                format!("unknown allocator {other:?}: expected \"mimalloc\" or \"system\""),
                            ))
                        }
                    }
                }
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!(
                            "unknown key `{other}`: expected `classifiers = {{ \"name\" => builder }}`, \
                             `generators = {{ .. }}` or `allocator = \"system\"`"
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// The TOML's absolute path (for reading it now) and its path relative to
/// `CARGO_MANIFEST_DIR` (what the binary resolves at run time).
fn resolve(path: &str, span: Span) -> syn::Result<(PathBuf, PathBuf)> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut candidates = vec![manifest.join(path)];
    // Beside the calling file, whose path is relative to rustc's working
    // directory (the workspace root) or to the package.
    let caller = span.unwrap().local_file();
    if let Some(dir) = caller.as_deref().and_then(Path::parent) {
        if let Ok(cwd) = std::env::current_dir() {
            candidates.push(cwd.join(dir).join(path));
        }
        candidates.push(manifest.join(dir).join(path));
    }
    let Some(found) = candidates.into_iter().find(|c| c.is_file()) else {
        return Err(syn::Error::new(
            span,
            format!(
                "failed to find `{path}`: no such file relative to CARGO_MANIFEST_DIR ({})",
                manifest.display()
            ),
        ));
    };
    let relative = relative_to(&found, &manifest).ok_or_else(|| {
        syn::Error::new(
            span,
            format!(
                "failed to express `{}` relative to CARGO_MANIFEST_DIR ({}), which the test \
                 binary needs to find it at run time",
                found.display(),
                manifest.display()
            ),
        )
    })?;
    Ok((found, relative))
}

/// `path` relative to the directory `base` (both made canonical), with
/// `..` where it lies outside `base`.
fn relative_to(path: &Path, base: &Path) -> Option<PathBuf> {
    let path = path.canonicalize().ok()?;
    let base = base.canonicalize().ok()?;
    let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    Some(out)
}

fn expand(input: MainInput) -> syn::Result<TokenStream> {
    let span = input.path.span();
    let written = input.path.value();
    let (path, relative) = resolve(&written, span)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| syn::Error::new(span, format!("failed to read `{written}`: {e}")))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let config = gevaldi_config::parse_in(&text, Path::new(&written), &dir)
        .map_err(|e| syn::Error::new(span, e.to_string()))?;

    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    for (kind, decls, regs, key) in [
        (
            "classifier",
            &config.classifiers,
            &input.classifiers,
            "classifiers",
        ),
        (
            "generator",
            &config.generators,
            &input.generators,
            "generators",
        ),
    ] {
        for d in decls.iter().filter(|d| d.builtin.is_none()) {
            if !regs.iter().any(|r| r.name.value() == d.name) {
                push(syn::Error::new(
                    span,
                    format!(
                        "{written}:{}: {kind} `{}` has no `arch`, so it must be registered from \
                         Rust: `{key} = {{ \"{}\" => <Fn(&ModelTable, &Device) -> gevaldi::Result<impl {}>> }}`",
                        d.line,
                        d.name,
                        d.name,
                        if kind == "classifier" {
                            "Classifier"
                        } else {
                            "Generator"
                        }
                    ),
                ));
            }
        }
        for (i, r) in regs.iter().enumerate() {
            let name = r.name.value();
            if regs[..i].iter().any(|earlier| earlier.name.value() == name) {
                push(syn::Error::new(
                    r.name.span(),
                    format!("{kind} `{name}` is registered twice in `{key}`: keep one"),
                ));
                continue;
            }
            match decls.iter().find(|d| d.name == name) {
                None => push(syn::Error::new(
                    r.name.span(),
                    format!("`{written}` declares no [{kind}.{name}] table"),
                )),
                Some(d) if d.builtin.is_some() => push(syn::Error::new(
                    r.name.span(),
                    format!(
                        "{written}:{}: [{kind}.{name}] is a built-in (`arch`), so it must not be \
                         registered from Rust; drop `arch` there to use this one",
                        d.line
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    if let Some(e) = errors {
        return Err(e);
    }

    // Only the relative path goes into the binary: it finds the TOML at run
    // time, so that it keeps working when the checkout moves.
    let abs = path.to_string_lossy().into_owned();
    let Some(relative) = relative.to_str().map(|r| r.replace('\\', "/")) else {
        return Err(syn::Error::new(
            span,
            "the path of the TOML is not valid UTF-8",
        ));
    };
    let classifiers = input.classifiers.iter().map(|r| {
        let (name, build) = (&r.name, &r.build);
        quote! { registry.register_classifier(#name, #build); }
    });
    let generators = input.generators.iter().map(|r| {
        let (name, build) = (&r.name, &r.build);
        quote! { registry.register_generator(#name, #build); }
    });
    let allocator = if input.system_allocator {
        quote! {}
    } else {
        quote! { ::gevaldi::__gevaldi_allocator!(); }
    };
    Ok(quote! {
        #allocator

        // Built by libtest's harness (`harness = true`, cargo's default for
        // a test target), this file's `main` would never run and `cargo
        // test` would pass with no trial run: libtest runs this test
        // instead. (A `harness = false` target is built without libtest,
        // which leaves `#[test]` functions out.)
        #[test]
        fn gevaldi_main_needs_harness_false() {
            ::core::panic!(
                "gevaldi::main! runs its own harness, but libtest's ran this file: declare \
                 its test target in Cargo.toml with `harness = false` ([[test]] name = \
                 \"<the file's name>\" harness = false); without it, cargo test runs none \
                 of the suite's trials"
            );
        }

        fn main() -> ::std::process::ExitCode {
            // Rebuild when the TOML changes (the bytes are not used).
            const _: &[u8] = ::core::include_bytes!(#abs);
            #[allow(unused_mut)]
            let mut registry = ::gevaldi::__private::Registry::new();
            #(#classifiers)*
            #(#generators)*
            // Found at run time relative to the package (see the docs).
            ::gevaldi::__private::run_in_package(#relative, registry)
        }
    })
}
