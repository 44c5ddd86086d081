//! Config → desired DaemonSets. Pure: no I/O, deterministic (same config, byte-identical output).
//!
//! Each set becomes one DaemonSet whose pods hold one container per image. The containers run a static
//! sleeper that an init container copies from the puller's own image into an emptyDir, so images with no
//! shell and no `sleep` (scratch, distroless) are cached too, and a running container keeps each image "in
//! use", safe from the kubelet's image garbage collection. Pods meet the Pod Security "restricted" profile.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, LocalObjectReference, Pod, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::config::{Config, Image, ImageSet, Refresh, Resources, SLEEPER_INIT_CONTAINER};
use crate::labels;

/// The sleeper protocol shared with the upstream tool, so either image can provide the sleeper: the init
/// container runs `/bin/cp /bin/sleep /kip/sleep` from the sleeper image (upstream's has a real `cp` and a
/// Go `sleep`; this project's has `kip-sleep` installed under both names), and cache containers run
/// `/kip/sleep 720h`.
pub const SLEEPER_IN_IMAGE: &str = "/bin/sleep";
pub const COPY_IN_IMAGE: &str = "/bin/cp";
/// Cache containers exit after this long and are restarted in place (as upstream's do).
pub const SLEEP_DURATION: &str = "720h";
pub const SLEEPER_DIR: &str = "/kip";
pub const SLEEPER_PATH: &str = "/kip/sleep";
const SLEEPER_VOLUME: &str = "kip";
/// Non-root user/group for the pods on plain Kubernetes (OpenShift assigns its own).
pub const RUN_AS_USER: i64 = 65532;
/// The sleeper exits at once on SIGTERM; the grace period only bounds a stuck kubelet.
const TERMINATION_GRACE_SECONDS: i64 = 5;
/// Nodes rolled at once on change; surge keeps the old pod (and the cached images in use) until the new
/// one runs, so a refresh never leaves a node without its cache pod.
const MAX_SURGE: &str = "10%";

/// Findings of the checkov scanner that are by design for cache pods, recorded on every DaemonSet where an
/// admin reads them (checkov's `checkov.io/skipN: CHECK=reason`). checkov splits the value on every `=`, so a
/// reason must contain none. The set's own annotations win on a key clash.
pub const CHECKOV_SKIPS: [(&str, &str); 5] = [
    (
        "checkov.io/skip1",
        "CKV_K8S_8=a cache container only sleeps to keep its image in use; there is nothing to probe",
    ),
    (
        "checkov.io/skip2",
        "CKV_K8S_9=a cache container serves nothing; no Service routes to it, so readiness has no meaning",
    ),
    (
        "checkov.io/skip3",
        "CKV_K8S_43=images are cached by the reference the config names; caching moving tags is the purpose",
    ),
    (
        "checkov.io/skip4",
        "CKV_K8S_14=the config names the tags to cache; latest or no tag is the user's choice",
    ),
    (
        "checkov.io/skip5",
        "CKV_K8S_15=cache containers are IfNotPresent so a node starts them while the registry is away; the \
         controller pulls changed tags itself (refresh digest) or the set pulls Always (refresh interval)",
    ),
];
/// On OpenShift the SCC assigns the user id, so none is set (see [`RenderOptions::openshift`]).
pub const CHECKOV_SKIP_OPENSHIFT: (&str, &str) = (
    "checkov.io/skip6",
    "CKV_K8S_40=OpenShift's SCC assigns a high user id from the project's range",
);
/// The largest DaemonSet (as the JSON sent to the API server) a config may describe; `config::load` refuses
/// a set above it, naming the set. etcd refuses a write over its `--max-request-bytes` (1.5 MiB by default),
/// and what is stored is more than what is sent: server-side apply adds managedFields (every field path
/// again), and the DaemonSet controller copies the pod template into a ControllerRevision. 1 MiB as sent
/// leaves room for both.
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// What render needs beside the config; all of it comes from the caller, so render stays pure.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// On OpenShift the SCC assigns user and group ids: set none.
    pub openshift: bool,
    /// The puller's own Deployment; uninstalling it garbage-collects the DaemonSets.
    pub owner: Option<OwnerReference>,
}

/// The value of the instance label: one puller's DaemonSets, told apart from another's in the namespace.
pub fn instance(config: &Config) -> &str {
    config.deployment_name.as_deref().unwrap_or(labels::MANAGER)
}

/// All desired DaemonSets, in config order.
pub fn render(config: &Config, options: &RenderOptions) -> Vec<DaemonSet> {
    config.sets.iter().map(|set| render_set(config, set, options)).collect()
}

/// Multi-document YAML of the DaemonSets (the `render` command's output).
pub fn to_yaml(daemonsets: &[DaemonSet]) -> Result<String, serde_saphyr::SerializeError> {
    let refs: Vec<&DaemonSet> = daemonsets.iter().collect();
    serde_saphyr::to_string_multiple(&refs)
}

pub fn selector_labels(set: &ImageSet) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.into(), labels::CACHE_NAME.into()),
        (labels::SET.into(), set.name.clone()),
    ])
}

pub fn render_set(config: &Config, set: &ImageSet, options: &RenderOptions) -> DaemonSet {
    let mut ds = render_unhashed(config, set, &set.images, options);
    let hash = rendered_spec_hash(&mut ds, set);
    finish(ds, hash, options)
}

/// The object of `set` built for a spec hash computed beforehand.
fn build(config: &Config, set: &ImageSet, options: &RenderOptions, hash: String) -> DaemonSet {
    finish(render_unhashed(config, set, &set.images, options), hash, options)
}

/// Adds the spec hash and the owner to an object rendered by [`render_unhashed`].
fn finish(mut ds: DaemonSet, hash: String, options: &RenderOptions) -> DaemonSet {
    // The owner reference is left out of the hash: it depends on where the render runs (the controller
    // knows its Deployment, `status` on a laptop does not), and "up to date" must not. The controller
    // compares the owner reference field by field instead.
    ds.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::SPEC_HASH.into(), hash);
    ds.metadata.owner_references = options.owner.clone().map(|o| vec![o]);
    ds
}

/// One set's desired DaemonSet in the light form a pass compares with: its name and spec hash, computed
/// without building the object. The k8s-openapi object (about 2 KB in some 22 allocations per image) is
/// built on first use: a write, a field comparison, a refresh. A reload that changed one set of 100 builds
/// one object; the unchanged sets, verified against their live objects, need only their hash.
#[derive(Debug)]
pub struct Desired {
    name: String,
    hash: String,
    form: Form,
}

#[derive(Debug)]
enum Form {
    Built(DaemonSet),
    Lazy {
        source: Arc<(Arc<Config>, RenderOptions)>,
        index: usize,
        object: OnceLock<DaemonSet>,
    },
}

impl Desired {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec hash the object carries (its [`labels::SPEC_HASH`] annotation).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The whole object, as [`render_set`] gives it; built at the first call.
    pub fn object(&self) -> &DaemonSet {
        match &self.form {
            Form::Built(ds) => ds,
            Form::Lazy { source, index, object } => object.get_or_init(|| {
                let (config, options) = &**source;
                build(config, &config.sets[*index], options, self.hash.clone())
            }),
        }
    }

    /// Whether the object was built (a figure for tests and benchmarks).
    pub fn is_built(&self) -> bool {
        match &self.form {
            Form::Built(_) => true,
            Form::Lazy { object, .. } => object.get().is_some(),
        }
    }
}

/// An object rendered elsewhere (tests, hand-made objects): name and hash read from it.
impl From<DaemonSet> for Desired {
    fn from(ds: DaemonSet) -> Self {
        Self {
            name: ds.metadata.name.clone().unwrap_or_default(),
            hash: labels::spec_hash_of(&ds).unwrap_or_default().to_owned(),
            form: Form::Built(ds),
        }
    }
}

/// Every set's [`Desired`], in config order: names and hashes now, objects when first used.
pub fn desired(config: &Arc<Config>, options: &RenderOptions) -> Vec<Desired> {
    let source = Arc::new((config.clone(), options.clone()));
    config
        .sets
        .iter()
        .enumerate()
        .map(|(index, set)| Desired {
            name: set.name.clone(),
            hash: light_spec_hash(config, set, options),
            form: Form::Lazy {
                source: source.clone(),
                index,
                object: OnceLock::new(),
            },
        })
        .collect()
}

/// Label value of [`labels::NAME`] on refresh pods: not the cache pods' own, so no DaemonSet adopts them.
pub const REFRESH_NAME: &str = "kip-refresh";
/// Annotation naming the node a refresh pod pulls for (its `nodeName` says the same).
pub const REFRESH_NODE: &str = "kubernetes-image-puller/refresh-node";
/// A refresh pod still not done after this long is given up (and tried again at the next check).
pub const REFRESH_DEADLINE_SECONDS: i64 = 600;
/// What a refresh container runs: the sleeper, told to exit at once (the pull is all that was wanted).
const REFRESH_SLEEP: &str = "0s";

/// The name of the refresh pod of `set` on `node`: one per set and node at a time.
pub fn refresh_pod_name(set: &str, node: &str) -> String {
    let digest = Sha256::digest(node.as_bytes());
    format!("{set}-refresh-{}", &hex16(&digest)[..10])
}

/// The labels that find every refresh pod of `set` made by `instance`.
pub fn refresh_selector(instance: &str, set: &str) -> String {
    format!(
        "{}={},{}={instance},{}={REFRESH_NAME},{}={set}",
        labels::MANAGED_BY,
        labels::MANAGER,
        labels::INSTANCE,
        labels::NAME,
        labels::SET
    )
}

/// A short-lived pod on `node` that pulls `images` (moving tags whose registry digest the node does not run)
/// by tag with pull policy Always, so that the node's tag moves to the new content, then exits. Once it has
/// succeeded the controller replaces the node's cache pod, which starts from the new content without asking
/// the registry (IfNotPresent). A pull by digest would not move the node's tag. Bound to the node by
/// `nodeName`; same resources, pull secrets, tolerations and Pod Security "restricted" settings as the cache
/// pods; owned (not controlled) by the set's DaemonSet, so it goes with it.
pub fn refresh_pod(
    config: &Config,
    set: &ImageSet,
    node: &str,
    images: &[&Image],
    owner: Option<OwnerReference>,
    options: &RenderOptions,
) -> Pod {
    let mut spec = pod_spec(config, set, &[], options);
    let resources = resource_requirements(&set.resources);
    spec.containers = images
        .iter()
        .map(|image| Container {
            args: Some(vec![REFRESH_SLEEP.into()]),
            ..cache_container(image, &resources, true)
        })
        .collect();
    spec.node_name = Some(node.to_owned());
    spec.node_selector = None;
    spec.affinity = None;
    spec.restart_policy = Some("Never".into());
    spec.active_deadline_seconds = Some(REFRESH_DEADLINE_SECONDS);
    let pod_labels = BTreeMap::from([
        (labels::MANAGED_BY.to_owned(), labels::MANAGER.to_owned()),
        (labels::PART_OF.to_owned(), labels::MANAGER.to_owned()),
        (labels::INSTANCE.to_owned(), instance(config).to_owned()),
        (labels::NAME.to_owned(), REFRESH_NAME.to_owned()),
        (labels::SET.to_owned(), set.name.clone()),
    ]);
    Pod {
        metadata: ObjectMeta {
            name: Some(refresh_pod_name(&set.name, node)),
            namespace: Some(config.namespace.clone()),
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([(REFRESH_NODE.to_owned(), node.to_owned())])),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The set's tolerations and, with a `[warm_gate]` taint, the toleration of that startup taint: the cache
/// pods must start on a cold node to warm it.
fn tolerations(config: &Config, set: &ImageSet) -> Option<Vec<Toleration>> {
    let mut out = set.tolerations.clone();
    if let Some(key) = config.warm_gate.as_ref().and_then(|w| w.taint.as_ref()) {
        out.push(Toleration {
            key: Some(key.clone()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
    }
    (!out.is_empty()).then_some(out)
}

/// The DaemonSet without its spec-hash annotation (what the hash is computed over), holding the cache
/// containers of `images` (the set's own, or none for the skeleton the hash and the size are made from).
fn render_unhashed(config: &Config, set: &ImageSet, images: &[Image], options: &RenderOptions) -> DaemonSet {
    let selector = selector_labels(set);
    let mut object_labels = selector.clone();
    object_labels.insert(labels::MANAGED_BY.into(), labels::MANAGER.into());
    object_labels.insert(labels::PART_OF.into(), labels::MANAGER.into());
    object_labels.insert(labels::INSTANCE.into(), instance(config).into());

    DaemonSet {
        metadata: ObjectMeta {
            name: Some(set.name.clone()),
            namespace: Some(config.namespace.clone()),
            labels: Some(object_labels.clone()),
            annotations: Some(annotations(set, options)),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_surge: Some(IntOrString::String(MAX_SURGE.into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(object_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(config, set, images, options)),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

/// The size of `render_set(config, set, &RenderOptions::default())` as JSON when it is over `limit`, else
/// None. Cheap for every load: an upper bound first (no rendering), the exact size only near the limit.
pub fn size_if_over(config: &Config, set: &ImageSet, limit: usize) -> Option<usize> {
    if bare_bound(config, set).saturating_add(images_bound(set)) <= limit {
        return None;
    }
    Some(encoded_len(config, set)).filter(|size| *size > limit)
}

/// The length of the JSON of `render_set(config, set, &RenderOptions::default())`, exact, without rendering
/// the containers: the set rendered without images, plus each image's container.
pub fn encoded_len(config: &Config, set: &ImageSet) -> usize {
    bare_len(config, set) + images_len(set)
}

/// The set rendered without images (and without hashing: the hash annotation has a fixed length).
fn bare_len(config: &Config, set: &ImageSet) -> usize {
    let rendered = render_unhashed(config, set, &[], &RenderOptions::default());
    let len = json_len(&rendered);
    let others = rendered.metadata.annotations.as_ref().is_some_and(|a| !a.is_empty());
    let entry = |value_len: usize| json_escaped_len(labels::SPEC_HASH) + value_len + 5; // "k":"v"
    match set.annotations.get(labels::SPEC_HASH) {
        // A user's annotation of that name is replaced.
        Some(v) => len - entry(json_escaped_len(v)) + entry(32),
        // One more entry, after a comma when there are others (the scanner notes always are).
        None => len + entry(32) + usize::from(others),
    }
}

/// More than all the fixed parts of a DaemonSet without images (keys, constant labels, security contexts,
/// the volume, the init container): about 2.5 KiB (a test holds the bound).
const SKELETON_BOUND: usize = 16 * 1024;

/// An upper bound of [`bare_len`] from the lengths of what varies, without rendering.
fn bare_bound(config: &Config, set: &ImageSet) -> usize {
    let e = json_escaped_len;
    let r = &set.resources;
    SKELETON_BOUND
        // The set's name: the object's name and the set label of the object, the template and the selector.
        + 4 * e(&set.name)
        + 2 * e(instance(config))
        + e(&config.namespace)
        + e(&config.kip_image)
        + e(&r.cpu_request)
        + e(&r.cpu_limit)
        + e(&r.memory_request)
        + e(&r.memory_limit)
        + json_len(&set.node_selector)
        + json_len(&set.tolerations)
        // The warm gate's toleration: its key, and fixed text well under 100 bytes.
        + config.warm_gate.as_ref().and_then(|w| w.taint.as_deref()).map_or(0, |t| e(t) + 100)
        + json_len(&set.affinity)
        + json_len(&set.annotations)
        + set.image_pull_secrets.iter().map(|s| e(s) + 16).sum::<usize>()
        + set.priority_class_name.as_deref().map_or(0, e)
}

/// The containers of the images, exact: each is a fixed template (by pull policy) holding its name, its
/// reference and the four resource quantities once each.
fn images_len(set: &ImageSet) -> usize {
    let (tagged, pinned) = container_templates();
    let e = json_escaped_len;
    let r = &set.resources;
    let resources = e(&r.cpu_request) + e(&r.cpu_limit) + e(&r.memory_request) + e(&r.memory_limit);
    let containers: usize = set
        .images
        .iter()
        .map(|i| {
            // A pinned reference is rendered as an IfNotPresent one is.
            let template = if pulls_always(set.refresh, i) { tagged } else { pinned };
            template + resources + e(&i.name) + e(&i.reference)
        })
        .sum();
    // Commas between the containers.
    containers + set.images.len().saturating_sub(1)
}

/// An upper bound of [`images_len`] from the strings' lengths alone (JSON writes a byte as at most 6): no
/// look at each byte, which every load would pay for thousands of images far below the limit.
fn images_bound(set: &ImageSet) -> usize {
    let (tagged, pinned) = container_templates();
    let e = json_escaped_len;
    let r = &set.resources;
    let resources = e(&r.cpu_request) + e(&r.cpu_limit) + e(&r.memory_request) + e(&r.memory_limit);
    let strings: usize = set.images.iter().map(|i| i.name.len() + i.reference.len()).sum();
    // The template, the resources and a comma per container.
    set.images
        .len()
        .saturating_mul(tagged.max(pinned) + resources + 1)
        .saturating_add(strings.saturating_mul(6))
}

/// The length of a cache container's JSON without its name, reference and resource quantities: for one
/// pulled Always, and for one IfNotPresent (a pinned reference).
fn container_templates() -> (usize, usize) {
    static TEMPLATES: OnceLock<(usize, usize)> = OnceLock::new();
    *TEMPLATES.get_or_init(|| {
        let empty = resource_requirements(&Resources {
            cpu_request: String::new(),
            cpu_limit: String::new(),
            memory_request: String::new(),
            memory_limit: String::new(),
        });
        // "@" marks a reference as pinned; it is one byte of the reference.
        let len = |reference: &str| {
            let image = Image {
                name: String::new(),
                reference: reference.to_owned(),
            };
            json_len(&cache_container(
                &image,
                &empty,
                pulls_always(Refresh::Interval, &image),
            )) - reference.len()
        };
        (len(""), len("@"))
    })
}

fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing k8s-openapi types cannot fail (see spec_hash).
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Bytes of `s` inside a JSON string as serde_json writes it.
fn json_escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// The DaemonSet's annotations: the by-design scanner findings, then the set's own (which win on a clash).
fn annotations(set: &ImageSet, options: &RenderOptions) -> BTreeMap<String, String> {
    let openshift = options.openshift.then_some(CHECKOV_SKIP_OPENSHIFT);
    let mut out: BTreeMap<String, String> = CHECKOV_SKIPS
        .iter()
        .chain(openshift.iter())
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    out.extend(set.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// Hex SHA-256 (first 16 bytes) of the object as rendered, before the hash annotation and the owner
/// reference are added.
pub fn spec_hash(ds: &DaemonSet) -> String {
    // Serializing k8s-openapi types to JSON cannot fail (no non-string map keys, no custom errors). The
    // JSON streams through a fixed buffer into the digest: serde_json's many small writes are batched, and
    // no growing copy of the whole object (60 KB for 100 images) is allocated.
    let mut w = std::io::BufWriter::with_capacity(8192, Sha256::new());
    let _ = serde_json::to_writer(&mut w, ds);
    let digest = w.into_inner().map(Sha256::finalize).unwrap_or_default();
    hex16(&digest)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex16(digest: &[u8]) -> String {
    let mut hex = String::with_capacity(32);
    for b in &digest[..16] {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

/// [`spec_hash`] of [`render_set`]'s object before the hash and owner are added, the same digest of the
/// same bytes, computed without building the cache containers: they differ only in name and image (and
/// pull policy, pinned or not), so the JSON of each is written from a per-set template with those two
/// strings spliced in, into the JSON of the object rendered without images. Falls back to serializing the
/// whole object when the skeleton is not laid out as expected (a test holds the equality).
fn light_spec_hash(config: &Config, set: &ImageSet, options: &RenderOptions) -> String {
    let skeleton = serde_json::to_vec(&render_unhashed(config, set, &[], options)).unwrap_or_default();
    templated_hash(&skeleton, set).unwrap_or_else(|| spec_hash(&render_unhashed(config, set, &set.images, options)))
}

/// The same digest for an object just rendered from `set` with its containers: they are taken out while
/// the skeleton is serialized, then put back.
fn rendered_spec_hash(ds: &mut DaemonSet, set: &ImageSet) -> String {
    let Some(pod) = ds.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return spec_hash(ds);
    };
    let containers = std::mem::take(&mut pod.containers);
    let skeleton = serde_json::to_vec(&*ds).unwrap_or_default();
    if let Some(pod) = ds.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.containers = containers;
    }
    templated_hash(&skeleton, set).unwrap_or_else(|| spec_hash(ds))
}

/// The digest of `skeleton` (JSON of an object with no cache containers) with `set`'s containers written
/// in, from templates. None if the skeleton or a template is not laid out as expected.
fn templated_hash(skeleton: &[u8], set: &ImageSet) -> Option<String> {
    // Split where the containers go. `"containers":[]` appears once, as the key: a string value holding it
    // would be escaped (`\"containers\"`), and no user map holds a list.
    const KEY: &[u8] = b"\"containers\":[";
    let mut at = skeleton
        .windows(KEY.len() + 1)
        .enumerate()
        .filter(|(_, w)| w.starts_with(KEY) && w[KEY.len()] == b']');
    let (Some((split, _)), None) = (at.next(), at.next()) else {
        return None;
    };
    let resources = resource_requirements(&set.resources);
    let tagged = ContainerTemplate::new(&resources, "", set.refresh == Refresh::Interval)?;
    let pinned = ContainerTemplate::new(&resources, "@", false)?;
    let mut w = std::io::BufWriter::with_capacity(8192, Sha256::new());
    let mut write = || -> std::io::Result<()> {
        use std::io::Write as _;
        w.write_all(&skeleton[..split + KEY.len()])?;
        for (n, image) in set.images.iter().enumerate() {
            if n > 0 {
                w.write_all(b",")?;
            }
            let template = if image.is_pinned() { &pinned } else { &tagged };
            w.write_all(&template.before_image)?;
            serde_json::to_writer(&mut w, &image.reference)?;
            w.write_all(&template.before_name)?;
            serde_json::to_writer(&mut w, &image.name)?;
            w.write_all(&template.after_name)?;
        }
        w.write_all(&skeleton[split + KEY.len()..])
    };
    write().ok()?;
    let digest = w.into_inner().map(Sha256::finalize).ok()?;
    Some(hex16(&digest))
}

/// The JSON of one cache container cut around its image and name values (each written as a JSON string
/// in between): `{..."image":` | `,"imagePullPolicy":...,"name":` | `,"resources":...}`.
struct ContainerTemplate {
    before_image: Vec<u8>,
    before_name: Vec<u8>,
    after_name: Vec<u8>,
}

impl ContainerTemplate {
    /// From a container rendered with `placeholder` as its reference ("@" stands for any pinned one) and
    /// an empty name; None if either value is not found exactly once.
    fn new(resources: &ResourceRequirements, placeholder: &str, always: bool) -> Option<Self> {
        let image = Image {
            name: String::new(),
            reference: placeholder.to_owned(),
        };
        let json = serde_json::to_vec(&cache_container(&image, resources, always)).ok()?;
        let image_at = format!("\"image\":\"{placeholder}\"");
        let (i, image_len) = (find_once(&json, image_at.as_bytes())?, image_at.len());
        let (n, name_len) = (find_once(&json, b"\"name\":\"\"")?, b"\"name\":\"\"".len());
        // serde writes fields in a fixed order: image before name.
        (i + image_len <= n).then(|| ContainerTemplate {
            before_image: json[..i + 8].to_vec(),
            before_name: json[i + image_len..n + 7].to_vec(),
            after_name: json[n + name_len..].to_vec(),
        })
    }
}

/// The position of the only occurrence of `needle` in `haystack`.
fn find_once(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let mut at = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i);
    match (at.next(), at.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    }
}

fn pod_spec(config: &Config, set: &ImageSet, images: &[Image], options: &RenderOptions) -> PodSpec {
    let resources = resource_requirements(&set.resources);
    let install = Container {
        name: SLEEPER_INIT_CONTAINER.into(),
        image: Some(config.kip_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![COPY_IN_IMAGE.into(), SLEEPER_IN_IMAGE.into(), SLEEPER_PATH.into()]),
        resources: Some(resources.clone()),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![sleeper_mount(false)]),
        ..Container::default()
    };
    PodSpec {
        init_containers: Some(vec![install]),
        containers: images
            .iter()
            .map(|image| cache_container(image, &resources, pulls_always(set.refresh, image)))
            .collect(),
        volumes: Some(vec![Volume {
            name: SLEEPER_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("16Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        node_selector: non_empty_map(&set.node_selector),
        tolerations: tolerations(config, set),
        affinity: set.affinity.clone(),
        image_pull_secrets: (!set.image_pull_secrets.is_empty()).then(|| {
            set.image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        priority_class_name: set.priority_class_name.clone(),
        security_context: Some(pod_security_context(options.openshift)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        ..PodSpec::default()
    }
}

/// Whether a cache container pulls its image at every start. Only the upstream refresh (`interval`: a rolling
/// restart re-pulls moving tags) needs it; with `digest` the controller pulls changed tags itself (a refresh
/// pod) and a restart starts from the node's disk, so the cache holds through a registry outage. A digest
/// never changes.
pub fn pulls_always(refresh: Refresh, image: &Image) -> bool {
    refresh == Refresh::Interval && !image.is_pinned()
}

fn cache_container(image: &Image, resources: &ResourceRequirements, always: bool) -> Container {
    Container {
        name: image.name.clone(),
        image: Some(image.reference.clone()),
        image_pull_policy: Some(if always { "Always" } else { "IfNotPresent" }.into()),
        command: Some(vec![SLEEPER_PATH.into()]),
        args: Some(vec![SLEEP_DURATION.into()]),
        resources: Some(resources.clone()),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![sleeper_mount(true)]),
        ..Container::default()
    }
}

fn sleeper_mount(read_only: bool) -> VolumeMount {
    VolumeMount {
        name: SLEEPER_VOLUME.into(),
        mount_path: SLEEPER_DIR.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn resource_requirements(r: &Resources) -> ResourceRequirements {
    let pair = |cpu: &str, memory: &str| {
        Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ]))
    };
    ResourceRequirements {
        requests: pair(&r.cpu_request, &r.memory_request),
        limits: pair(&r.cpu_limit, &r.memory_limit),
        ..ResourceRequirements::default()
    }
}

fn pod_security_context(openshift: bool) -> PodSecurityContext {
    let id = (!openshift).then_some(RUN_AS_USER);
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: id,
        run_as_group: id,
        fs_group: id,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

fn non_empty_map(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, reference: &str) -> Image {
        Image {
            name: name.into(),
            reference: reference.into(),
        }
    }

    /// A config and a set with an image pull secret and an annotation whose value needs JSON escaping.
    fn fixture(node_selector: (&str, &str), note: &str) -> (Config, ImageSet) {
        let config = Config {
            namespace: "ns".into(),
            caching_interval_hours: 1,
            refresh_check_interval: crate::config::DEFAULT_REFRESH_CHECK_INTERVAL,
            warm_gate: None,
            kip_image: "quay.io/x/kip:1".into(),
            deployment_name: Some("kip".into()),
            sets: vec![],
        };
        let set = ImageSet {
            name: "s".into(),
            node_selector: BTreeMap::from([(node_selector.0.into(), node_selector.1.into())]),
            image_pull_secrets: vec!["regcred".into()],
            annotations: BTreeMap::from([("note".into(), note.into())]),
            ..ImageSet::default()
        };
        (config, set)
    }

    #[test]
    fn encoded_len_is_the_length_of_the_rendered_json() {
        let (config, mut set) = fixture(("pool", "a"), "quote \" and \\ and \n é");
        for (images, annotations) in [
            (vec![], BTreeMap::new()),
            (
                vec![],
                BTreeMap::from([(labels::SPEC_HASH.to_owned(), "mine".to_owned())]),
            ),
            (vec![], set.annotations.clone()),
            (vec![image("a", "busybox")], set.annotations.clone()),
            (
                vec![
                    image("a", "busybox:1.36"),
                    image("b", &format!("quay.io/x/y@sha256:{}", "0".repeat(64))),
                    image("c", "registry.example.com:5000/team/app:v1.2.3"),
                ],
                set.annotations.clone(),
            ),
        ] {
            set.images = images;
            set.annotations = annotations;
            let rendered = serde_json::to_vec(&render_set(&config, &set, &RenderOptions::default())).unwrap();
            assert_eq!(
                encoded_len(&config, &set),
                rendered.len(),
                "{} images",
                set.images.len()
            );
        }
        // The bound holds, with everything set and with nothing set.
        set.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("k".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }];
        set.priority_class_name = Some("low".into());
        for s in [
            set.clone(),
            ImageSet {
                annotations: BTreeMap::new(),
                node_selector: BTreeMap::new(),
                tolerations: vec![],
                image_pull_secrets: vec![],
                priority_class_name: None,
                ..set.clone()
            },
        ] {
            let exact = bare_len(&config, &s);
            assert!(exact < bare_bound(&config, &s), "{exact} {}", bare_bound(&config, &s));
            assert!(exact < SKELETON_BOUND / 4, "the bound is far above a bare set: {exact}");
            assert_eq!(size_if_over(&config, &s, 0), Some(encoded_len(&config, &s)));
            assert_eq!(size_if_over(&config, &s, MAX_OBJECT_BYTES), None);
        }
        assert_eq!(json_escaped_len("a\"\\\u{1}é"), 1 + 2 + 2 + 6 + 2);
    }

    #[test]
    fn templated_hash_is_the_hash_of_the_whole_object() {
        // Values that look like the spliced-in part of the template must not confuse it.
        let (config, mut set) = fixture(("containers", "[]"), "\"containers\":[] quote \" \\ \n é");
        set.priority_class_name = Some("low".into());
        let pinned = format!("quay.io/x/y@sha256:{}", "0".repeat(64));
        for images in [
            vec![],
            vec![image("a", "busybox")],
            vec![image("a", &pinned)],
            vec![
                image("a", "busybox:1.36"),
                image("b", &pinned),
                image("name", "registry.example.com:5000/team/app:v1.2.3"),
                image("image", "quay.io/\"odd\"/\\x:\u{1}"),
            ],
        ] {
            set.images = images;
            for openshift in [false, true] {
                let options = RenderOptions { openshift, owner: None };
                let mut ds = render_unhashed(&config, &set, &set.images, &options);
                let whole = spec_hash(&ds);
                assert_eq!(light_spec_hash(&config, &set, &options), whole, "{:?}", set.images);
                assert_eq!(rendered_spec_hash(&mut ds, &set), whole, "{:?}", set.images);
                // The object is given back as it was, containers included.
                assert_eq!(spec_hash(&ds), whole);
                let rendered = render_set(&config, &set, &options);
                assert_eq!(rendered.metadata.annotations.unwrap()[labels::SPEC_HASH], whole);
            }
        }
    }

    #[test]
    fn desired_is_the_rendered_object_built_on_first_use() {
        let (mut config, mut set) = fixture(("pool", "a"), "note");
        set.images = vec![image("a", "busybox:1.36"), image("b", "quay.io/x/y:1")];
        let other = ImageSet {
            name: "t".into(),
            images: vec![image("c", "nginx:1.27")],
            ..set.clone()
        };
        config.sets = vec![set, other];
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "kip".into(),
            uid: "u".into(),
            ..OwnerReference::default()
        };
        let options = RenderOptions {
            openshift: true,
            owner: Some(owner),
        };
        let config = Arc::new(config);
        let desired = desired(&config, &options);
        let rendered = render(&config, &options);
        assert_eq!(desired.len(), 2);
        assert!(desired.iter().all(|d| !d.is_built()), "names and hashes only");
        for (d, r) in desired.iter().zip(&rendered) {
            assert_eq!(Some(d.name()), r.metadata.name.as_deref());
            assert_eq!(Some(d.hash()), labels::spec_hash_of(r));
        }
        assert_eq!(desired[1].object(), &rendered[1]);
        assert!(
            desired[1].is_built() && !desired[0].is_built(),
            "only the object asked for"
        );
        let built = Desired::from(rendered[0].clone());
        assert_eq!((built.name(), built.hash()), (desired[0].name(), desired[0].hash()));
        assert_eq!(built.object(), desired[0].object());
    }

    /// The hash is part of every live object: it must not change between runs, builds or platforms (a
    /// change re-applies every DaemonSet once on upgrade). This value was computed when the templated
    /// hash was introduced, by the full serialization it replaced.
    #[test]
    fn spec_hash_is_stable() {
        let config = Config {
            namespace: "image-cache".into(),
            caching_interval_hours: 6,
            refresh_check_interval: crate::config::DEFAULT_REFRESH_CHECK_INTERVAL,
            warm_gate: None,
            kip_image: "quay.io/example/kubernetes-image-puller:1.0.0".into(),
            deployment_name: None,
            sets: vec![],
        };
        let set = ImageSet {
            name: "web".into(),
            images: vec![
                Image {
                    name: "nginx".into(),
                    reference: "docker.io/library/nginx:1.27".into(),
                },
                Image {
                    name: "pause".into(),
                    reference: format!("registry.k8s.io/pause@sha256:{}", "a".repeat(64)),
                },
            ],
            node_selector: BTreeMap::from([("pool".into(), "a".into())]),
            ..ImageSet::default()
        };
        let ds = render_set(&config, &set, &RenderOptions::default());
        assert_eq!(
            ds.metadata.annotations.unwrap()[labels::SPEC_HASH],
            "eaa46ee85280db92250a1b36a47b0ed4"
        );
    }

    #[test]
    fn streamed_hash_is_the_digest_of_the_whole_json() {
        let container = |i: usize| Container {
            name: format!("image-{i}"),
            image: Some(format!("registry.example.com/team/image-{i}:v{i}")),
            ..Container::default()
        };
        // Small and large objects: under, across and far over the buffer.
        for images in [0, 1, 100, 1000] {
            let ds = DaemonSet {
                spec: Some(DaemonSetSpec {
                    template: PodTemplateSpec {
                        spec: Some(PodSpec {
                            containers: (0..images).map(container).collect(),
                            ..PodSpec::default()
                        }),
                        ..PodTemplateSpec::default()
                    },
                    ..DaemonSetSpec::default()
                }),
                ..DaemonSet::default()
            };
            let whole = Sha256::digest(serde_json::to_vec(&ds).unwrap());
            let want: String = whole[..16].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(spec_hash(&ds), want, "{images} images");
        }
    }
}
