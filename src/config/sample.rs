//! The `master.cfg.sample` that `minibot create-master` writes, and its
//! published placeholders (which checkconfig warns about when left in).

/// The `master.cfg.sample` that `minibot create-master` writes: the
/// hello-world setup of SPEC §2, commented for someone who knows Buildbot.
pub const SAMPLE: &str = r#"# minibot master configuration: the counterpart of Buildbot's master.cfg,
# written in TOML instead of Python.
#
#   minibot checkconfig DIR    checks this file and lists every problem
#   minibot reconfig DIR       loads it into the running master (SIGHUP);
#                              running builds and connected workers stay
#
# Unknown keys are errors, so a typo is reported instead of silently ignored.

# Shown in the page header and the browser title (Buildbot's c['title']).
title = "Hello World CI"

# The address users type to reach the web UI (Buildbot's c['buildbotURL']):
# the base of the links in commit statuses and mails. Behind an SSH tunnel or
# a proxy this is the outside address, not the one the master listens on.
buildbot_url = "http://localhost:12345/"

# Cap on each step log, in bytes (Buildbot's logMaxSize); output beyond it is
# dropped and the log says so. Default 10 MiB.
# max_log_size = 10485760

# Cap on the artifacts one build may upload (upload steps), in bytes; a
# builder may set its own. A file that would pass it fails its step with a
# message naming the cap, and nothing of it is kept. Default 1 GiB.
# max_artifact_bytes = 1073741824


######## Web UI, JSON API and change hooks (Buildbot's c['www'])

[www]
# TCP port of the web UI, the API and the change hooks. On a shared host pick
# a port nobody else uses.
port = 12345
# Address to listen on. 127.0.0.1 keeps the UI private to this machine; reach
# it from outside with `ssh -L 12345:localhost:12345 ...`. Write 0.0.0.0 only
# if you really want it open to the world.
bind = "127.0.0.1"
# Instead of port: listen on a unix socket (created with mode 0600), e.g. for
# a web server's reverse proxy. Remove `port` when you use this.
# unix_socket = "www.sock"
# What visitors who are not logged in may do: "read" (default) or "none".
# Force, stop and rebuild always need a login: see `minibot user add`.
# anonymous = "read"

# "Log in with Gitea" (OAuth2 with PKCE), beside the local users, who keep
# their password login. In Gitea: Settings > Applications > Manage OAuth2
# Applications, redirect URI <buildbot_url>login/gitea/callback (so set
# buildbot_url above), "Confidential client" on; put its client id here and
# its secret in a file of mode 0600 (docs/gitea.md, "Log in with Gitea").
# [www.auth]
# type = "gitea"
# base_url = "https://git.example.org"
# client_id = "0ba1c6f4-..."
# client_secret_file = "gitea-oauth-secret"
# verify_tls = true
# Who may force, stop, rebuild, cancel and pause: Gitea users, every member
# of an organisation, or of one of its teams. Other Gitea users get what
# `anonymous` gives (with "none", they cannot log in). A login's
# organisations and teams are read from Gitea when it logs in; a session
# lasts 12 hours.
# admins = ["org:myorg", "team:myorg/ci", "user:isabell"]

# Gitea webhooks (as the buildbot_gitea plugin). In Gitea: repository
# Settings > Webhooks > Add Webhook > Gitea, target URL
# <buildbot_url>change_hook/gitea, POST, content type application/json, and
# the same secret as here. Pushes to branches and tags and pull requests
# become changes.
[www.change_hook_dialects.gitea]
# The signature of every hook is checked against it. create-master wrote a
# random one here; make your own with `openssl rand -hex 16`.
secret = "SomeSecretPassPhraseToAuthenticateGitea"
# true: one change per push (its head commit) instead of one per commit.
# only_include_push_commit = false
# Which URL of the repository a change carries: "ssh" (default), "clone"
# (the https clone URL) or "html" (the web page; the github dialect's default);
# the git step fetches from the step's repourl anyway.
# repository_url = "ssh"
# codebase = ""
# true: skip a pull request that Gitea reports as conflicting when it is
# opened (Gitea's answer is only reliable then; later events are built).
# only_mergeable_pull_request = false
# A push or pull request whose head commit message (PR: title or
# description) matches one of these regexes is not built; the default is
# Buildbot's: "[skip ci]" and "[ci skip]". [] builds everything.
# skips = ['\[ *skip *ci *\]', '\[ *ci *skip *\]']
# What a pull request's build checks out: "merge" (default: the PR head
# merged into the base branch, as it would land; a conflict fails the git
# step) or "head" (the PR head alone).
# pull_request_checkout = "merge"

# Buildbot's "base" dialect: plain form or JSON posts, e.g. from
# `minibot sendchange`, curl or a git post-receive hook, to
# <buildbot_url>change_hook/base. Off unless uncommented. It needs a secret:
# every post must then carry X-Hub-Signature-256 (hex HMAC-SHA256 of the body,
# as GitHub signs). `allow_unsigned = true` instead of a secret accepts
# unsigned posts from anyone who can reach the port (other accounts on this
# host, any web page in a browser using your SSH tunnel); checkconfig warns.
# [www.change_hook_dialects.base]
# secret = "..."


######## Where workers connect (Buildbot's c['protocols'] = {'pb': {...}})

[protocols.worker]
# The port given to `minibot-worker create-worker ... HOST:PORT ...`.
port = 54321
# Remote workers can come in through an SSH tunnel, so 127.0.0.1 is enough.
bind = "127.0.0.1"
# Seconds between keepalive pings; a peer silent for three times this long
# is taken for dead and its build is retried.
# keepalive = 30


######## Workers (Buildbot's c['workers'])
# Each one is created on its machine with the same name and password:
#   minibot-worker create-worker DIR localhost:54321 example-worker REPLACED-BY-CREATE-MASTER

[[workers]]
# Letters, digits, '.', '_' and '-' only.
name = "example-worker"
# Never sent over the wire: the worker answers a challenge with it.
# create-master wrote a random one here; make more with `openssl rand -hex 16`.
password = "REPLACED-BY-CREATE-MASTER"
# How many builds this worker runs at once (Buildbot's max_builds).
max_builds = 1


######## Schedulers (Buildbot's c['schedulers']): which changes start builds

[[schedulers]]
name = "all"
# single_branch: changes on one branch (Buildbot's SingleBranchScheduler).
#             Pull requests count for the branch they target.
# any_branch: changes on any branch, or those matching branch_regex /
#             tag_regex (AnyBranchScheduler); only this one builds tags.
# force:      the "force build" button and POST /api/v2/forceschedulers/<name>.
# periodic:   every `period` seconds (Periodic).
# nightly:    at set times, local time (Nightly).
type = "single_branch"
branch = "master"
# Seconds to wait for more changes before building them together (0: at once).
tree_stable_timer = 0
builders = ["runtests"]
# Change filters (Buildbot's ChangeFilter), for single_branch, any_branch and
# nightly: a change must pass each one that is set. repository, project and
# category take a string or a list; files_regex passes a change when one of
# its files matches (changes without a file list, e.g. pull requests, pass).
# project = "isabell/hello-world"
# category = ["push", "pull_request"]   # push | tag | pull_request (Gitea)
# files_regex = "^(src/|Cargo)"

[[schedulers]]
name = "force"
type = "force"
builders = ["runtests"]
# The form has branch, revision and reason fields; these set their defaults.
# branch = "master"
# reason = "force build"
# button_name = "Force build"
# More fields, each becoming a build property (%(prop:NAME)s):
# type = string | text | int | bool | choice | fixed (shown, not editable).
# [[schedulers.properties]]
# name = "level"
# type = "choice"
# label = "Test level"
# choices = ["quick", "full"]
# default = "quick"

# Every 6 hours, the tip of master:
# [[schedulers]]
# name = "every-6h"
# type = "periodic"
# period = 21600
# branch = "master"
# builders = ["runtests"]

# At 03:30 on weekdays (0 = Monday ... 6 = Sunday, or "mon".."sun"), only if
# master changed since the last time. minute defaults to 0, the others to
# every value; each takes a number, a list, or "*". A time missed while the
# master was down is made up once at start.
# [[schedulers]]
# name = "nightly"
# type = "nightly"
# branch = "master"
# hour = 3
# minute = 30
# day_of_week = [0, 1, 2, 3, 4]
# only_if_changed = true
# builders = ["runtests"]

# Chained builds (docs/chains.md). A triggerable scheduler is started only
# by `trigger` steps of other builds (Buildbot's Triggerable); it takes just
# name, type and builders:
# [[schedulers]]
# name = "deploy"
# type = "triggerable"
# builders = ["deploy"]
#
# A dependent scheduler starts its builders on the same source stamp each
# time a buildset of its upstream scheduler ends with every build SUCCESS
# (Buildbot's Dependent):
# [[schedulers]]
# name = "deploy-after-tests"
# type = "dependent"
# upstream = "all"                    # the name of another scheduler
# builders = ["deploy"]
#
# Chains that loop (A triggers B triggers A, a dependent of itself) are
# refused by checkconfig.


######## Builders (Buildbot's c['builders']): what a build does

[[builders]]
# Also the directory the build runs in on the worker (unless workerbuilddir
# is set), so: letters, digits, '.', '_' and '-' only.
name = "runtests"
# Workers that may run this builder's builds.
workers = ["example-worker"]
# description = "Runs the hello-world tests"
# tags = ["hello"]
# workerbuilddir = "runtests"
# When several requests for the same branch (or pull request) wait for a
# worker, build only the newest; the older ones end SKIPPED, each naming the
# build that covered it (Buildbot's collapseRequests). Default true.
# collapse_requests = true
# Locks (see [[locks]] below) its builds hold from before they start until
# they end: taken all at once, or the request waits in the queue without
# taking a worker. access = "exclusive" (default: alone) or "counting"
# (beside other counting holders, up to the lock's max_count).
# locks = [{ name = "deploy", access = "exclusive" }]
# Bytes of artifacts one build of this builder may upload (default: the
# top-level max_artifact_bytes).
# max_artifact_bytes = 104857600

# The steps run in order in the build directory (Buildbot's BuildFactory).
[[builders.steps]]
# Clone or update the source at the change's revision (Buildbot's Git step)
# into the build directory's "build" subdirectory.
type = "git"
# Edit this: the repository the worker clones.
repourl = "https://git.example.org/isabell/hello-world.git"
# incremental: keep the checkout between builds; full: a fresh clone each time.
mode = "incremental"
# branch = "master"   # when the change names none (e.g. a forced build)

[[builders.steps]]
# Run a command (Buildbot's ShellCommand); exit code 0 is success.
type = "shell"
# Shown on the build page; defaults to the command's first word.
name = "test"
# An argv list, run as is; or a string, run by /bin/sh. %(prop:branch)s,
# %(prop:revision)s, %(prop:buildnumber)s ... are replaced as by Buildbot's
# Interpolate, and reach the environment as MINIBOT_BRANCH, ...
command = ["python3", "test_hello.py"]
env = { PYTHONUNBUFFERED = "1" }
# Seconds without output before the step is killed.
timeout = 1200
# As in Buildbot: halt_on_failure (default true here), flunk_on_failure,
# warn_on_failure, flunk_on_warnings, always_run; warning_exit_codes lists
# exit codes meaning WARNINGS instead of FAILURE; workdir is relative to the
# build directory (default "build").
# halt_on_failure = true
# Locks held only while this step runs, taken all at once before it starts
# (the build waits, on its worker, saying for which lock); not one its
# builder already takes.
# locks = [{ name = "deploy", access = "counting" }]


######## Locks (Buildbot's MasterLock and WorkerLock): builds that must not overlap

# Declared here, taken in a builder's or a step's `locks`. kind = "master"
# (default): one lock for the whole master, e.g. two deploys to one host;
# "worker": one lock on each worker, e.g. one heavy build per machine.
# max_count (default 1): how many holders with access = "counting" it takes
# at once (on each worker for a worker lock); an exclusive holder is alone.
# A held lock stays held across a reconfig until its build or step ends,
# and every end of a build gives its locks back (a stop, a lost worker, a
# master restart too). docs/locks.md has the details.
# [[locks]]
# name = "deploy"
# kind = "master"
# max_count = 1

# Keep a command's output as a build property (Buildbot's
# SetPropertyFromCommand): its stdout, stripped, or the one group of regex's
# first match. Later steps use it as %(prop:version)s; the build page and the
# API show it. More than 64 KiB of output, or a regex that does not match,
# fails the step.
# [[builders.steps]]
# type = "set_property"
# property = "version"
# command = "git describe --tags"
# regex = 'v(\S+)'                    # optional; exactly one group

# A step that uses a secret (see [secrets] below): %(secret:NAME)s in a
# command or env value. In a string command it reaches /bin/sh as
# ${MINIBOT_SECRET_NAME}, never as text of the command.
# [[builders.steps]]
# type = "shell"
# name = "publish"
# command = "twine upload -u __token__ dist/*"
# env = { TWINE_PASSWORD = "%(secret:pypi_token)s" }   # env: not in `ps`


######## Secrets (Buildbot's SecretInAFile)

# %(secret:NAME)s in a shell or set_property step's command or env is the
# content of the file NAME in this directory (relative to the master
# directory), without its trailing newline. The directory must be 0700 and
# each file 0600, both owned by the master's user, or checkconfig and the
# step refuse them; names are letters, digits and '_'. A secret goes only to
# the step that uses it, is never stored, and every occurrence of it in any
# later output of the build (also base64, hex, URL- or JSON-encoded) shows as
# <secret:NAME>. Values of 4 to 4096 bytes.
#   mkdir -m 700 secrets && (umask 077; printf '%s' TOKEN > secrets/pypi_token)
# [secrets]
# dir = "secrets"

# A step the master runs itself, never the worker (Buildbot's Trigger): a
# buildset for each named triggerable scheduler, at this build's source
# stamp (the revision its git step checked out), with scheduler = the
# triggerable's name and the properties chosen below (source "Trigger").
# [[builders.steps]]
# type = "trigger"
# schedulers = ["deploy"]
# Wait for the triggered builds: their worst result is this step's (a
# failure there fails the step and, with halt_on_failure, the build).
# Default false: the step succeeds once the builds are queued. A waiting
# build keeps its worker slot: give the triggered builders other workers or
# max_builds > 1, or they wait for each other forever.
# wait = true
# set_properties = { environment = "staging", from = "%(prop:buildnumber)s" }
# copy_properties = ["version"]      # this build's properties, passed as they are

# The builder the triggerable "deploy" scheduler above starts. With
# wait = true give it a worker of its own (or max_builds > 1): checkconfig
# warns when the waiting build may hold the only slot it could use.
# [[builders]]
# name = "deploy"
# workers = ["example-worker"]
# [[builders.steps]]
# type = "shell"
# command = ["./deploy.sh", "%(prop:version)s"]

# Keep build products (Buildbot's FileUpload, DirectoryUpload and
# MultipleFileUpload in one): send files from the build directory to the
# master, which stores them as artifacts/<buildid>/<name>, lists them on the
# build page and in the API (/api/v2/builds/<id>/artifacts) with size and
# sha256, and serves them for download. source is a file, a directory (sent
# with everything below it) or a glob ("dist/*.whl": * and ? in any part);
# symlinks leading out of the build directory are refused. dest is the name
# on the master (for a directory or glob: the prefix); default the source's
# own name.
# [[builders.steps]]
# type = "upload"
# source = "dist/*.tar.gz"
# dest = "release"

# Fetch a file from the master into the build directory (Buildbot's
# FileDownload): an artifact of this build, of build number N of this
# builder (build = N) or of its last successful build that has one
# (build = "last_successful"); or a file under this directory's files/
# (file = "deploy.sh"). dest is relative to the build directory.
# [[builders.steps]]
# type = "download"
# artifact = "release/hello-1.0.tar.gz"
# build = "last_successful"
# dest = "hello.tar.gz"
# With build: "triggering", the artifact of the build whose trigger step
# started this one instead (a deploy fetching its release build's tarball).


######## A release, put together (docs/release.md has it whole, and a test runs it)

# Tests on two workers, the tarball kept as an artifact, then a deploy with
# a secret under a lock. The secret and the lock as above ([secrets] with
# dir "secrets", the master lock "deploy"), two more workers, and:
#
# [[workers]]
# name = "w1"
# password = "REPLACE-WITH-openssl-rand-hex-16"
# max_builds = 3                      # a release waits for its tests and deploy, keeping its slot
# [[workers]]
# name = "w2"
# password = "REPLACE-WITH-openssl-rand-hex-16"
# max_builds = 3
#
# [[schedulers]]
# name = "release"                    # "Force build" starts a release
# type = "force"
# builders = ["release"]
# [[schedulers]]
# name = "release-tests"
# type = "triggerable"
# builders = ["test-w1", "test-w2"]   # one builder pinned to each worker
# [[schedulers]]
# name = "release-deploy"
# type = "triggerable"
# builders = ["release-deploy"]
#
# [[builders]]
# name = "release"
# workers = ["w1", "w2"]
# [[builders.steps]]
# type = "git"
# repourl = "https://git.example.org/isabell/hello-world.git"
# [[builders.steps]]
# type = "set_property"               # the version, for later steps
# property = "version"
# command = ["cat", "VERSION"]
# [[builders.steps]]
# type = "trigger"                    # test-w1 and test-w2 at once, same revision
# schedulers = ["release-tests"]
# wait = true
# [[builders.steps]]
# type = "shell"
# name = "dist"
# command = "mkdir -p dist && git archive --prefix=hello-%(prop:version)s/ -o dist/hello.tar.gz HEAD"
# [[builders.steps]]
# type = "upload"                     # artifact "hello.tar.gz" of this build
# source = "dist/hello.tar.gz"
# [[builders.steps]]
# type = "trigger"
# schedulers = ["release-deploy"]
# wait = true
# copy_properties = ["version"]
#
# [[builders]]
# name = "test-w1"
# workers = ["w1"]
# [[builders.steps]]
# type = "git"
# repourl = "https://git.example.org/isabell/hello-world.git"
# [[builders.steps]]
# type = "shell"
# command = ["python3", "test_hello.py"]
# [[builders]]
# name = "test-w2"                    # the same, on w2
# workers = ["w2"]
# [[builders.steps]]
# type = "git"
# repourl = "https://git.example.org/isabell/hello-world.git"
# [[builders.steps]]
# type = "shell"
# command = ["python3", "test_hello.py"]
#
# [[builders]]
# name = "release-deploy"
# workers = ["w1", "w2"]
# collapse_requests = false           # every release is deployed
# locks = [{ name = "deploy", access = "exclusive" }]   # one deploy at a time
# [[builders.steps]]
# type = "download"
# artifact = "hello.tar.gz"
# build = "triggering"                # from the release build that started it
# dest = "hello.tar.gz"
# [[builders.steps]]
# type = "shell"
# name = "deploy"
# env = { DEPLOY_TOKEN = "%(secret:deploy_token)s" }
# command = "printf 'Authorization: Bearer %s\\n' \"$DEPLOY_TOKEN\" | curl -fsS -H @- -T hello.tar.gz https://releases.example.org/upload/hello-$MINIBOT_VERSION.tar.gz"


######## Housekeeping (Buildbot's JanitorConfigurator, and buildbot.tac's log settings)

# The janitor deletes old builds and build logs so that a small disk quota
# never fills up. It runs shortly after the master starts, then every
# interval_hours, and writes what it pruned to master.log. It is on even
# without this section; set a horizon to 0 to keep that data forever.
[janitor]
# Finished builds older than this many days are deleted with their steps and
# logs (the newest build of each builder is always kept, so build numbers
# never restart).
build_horizon_days = 180
# Log files of builds older than this many days are deleted; the builds stay
# in the history and their logs read as empty. The bulk of the disk is here.
log_horizon_days = 30
# Artifacts (upload steps) of builds older than this many days are deleted,
# files and listing; the builds stay. They also go with their build.
artifact_horizon_days = 30
# interval_hours = 24

# The master's own log, master.log. RUST_LOG in the environment wins over
# level when it is set.
# [logging]
# level = "info"                # or "debug", or "info,minibot::web::www=debug"
# rotate_length = 10000000      # bytes; then master.log becomes master.log.1
# max_rotated_files = 5         # master.log.1 ... master.log.5 are kept


######## Reporters (Buildbot's c['services'])

# Commit statuses on Gitea (as buildbot_gitea's GiteaStatusPush): pending
# when a build starts, then success, warning, failure or error, linking to
# the build page under buildbot_url. Pull requests get the status on their
# head commit in the base repository. The token (Gitea: Settings >
# Applications, scope write:repository) goes in a file only you can read:
#   printf '%s' TOKEN > gitea-token && chmod 600 gitea-token
# [[reporters]]
# type = "gitea_status"
# base_url = "https://git.example.org"
# token_file = "gitea-token"          # relative to this directory; or token = "..."
# context = "minibot/%(prop:buildername)s"
# context_pr = "minibot/pr/%(prop:buildername)s"   # default: context
# verify_tls = true                   # false for a self-signed certificate
# builders = ["runtests"]             # default: every builder

# Mail about finished builds (Buildbot's MailNotifier). mode: all, failing,
# passing, warnings, exception, cancelled, problem (failed after not
# failing), change (result differs from the last build), or a list.
# [[reporters]]
# type = "mail"
# smtp_host = "smtp.example.org"
# smtp_port = 587
# starttls = true                     # default; false only for a local relay
# smtp_user = "isabell"
# smtp_password_file = "smtp-password"   # mode 0600; or smtp_password = "..."
# from = "minibot <ci@example.org>"
# to = ["isabell@example.org"]
# mode = "problem"


######## Change sources (Buildbot's c['change_source'])

# Poll a repository whose server cannot reach this master's change hook
# (Buildbot's GitPoller). The last revision seen per branch is kept in the
# database: a restart neither misses nor repeats a change. The first poll
# only records where the branches are.
# [[change_source]]
# type = "git_poller"
# repourl = "https://git.example.org/isabell/hello-world.git"
# branches = ["master"]               # or "all"
# poll_interval = 600                 # seconds
# poll_at_launch = false
# project = "isabell/hello-world"

# Pull requests of a Gitea that cannot reach this master (docs/gitea.md,
# "A Gitea on another host"): its API is asked for the open pull requests
# every poll_interval; a new one, or one whose head moved, becomes the
# change the pull_request webhook would bring (same properties, tested as
# merged), made with the [www.change_hook_dialects.gitea] options when that
# section is there. Pushes come from a git_poller as above. The first poll
# only records what is open; a restart neither misses nor repeats one.
# [[change_source]]
# type = "gitea_pr_poller"
# base_url = "https://git.example.org"
# repository = "isabell/hello-world"  # owner/name
# token_file = "gitea-token"          # mode 0600; a token that may read the repository
# poll_interval = 60                  # seconds
# poll_at_launch = true
# max_pull_requests = 200             # most recently updated first; at most 5000
# verify_tls = true
# name = "hello-world pull requests"  # default: the API URL of the pulls
"#;

/// The Gitea secret in [`SAMPLE`]: Buildbot's documented example, so
/// published. `create-master` replaces it with a random one
/// ([`sample_with_secrets`]); checkconfig warns when a config still has it.
pub(crate) const SAMPLE_GITEA_SECRET: &str = "SomeSecretPassPhraseToAuthenticateGitea";

/// The worker password placeholder in [`SAMPLE`], replaced the same way.
pub(crate) const SAMPLE_WORKER_PASSWORD: &str = "REPLACED-BY-CREATE-MASTER";

/// [`SAMPLE`] with its published Gitea secret and placeholder worker
/// password replaced (the placeholder also in the create-worker example
/// comment, so it can be copied as is).
pub fn sample_with_secrets(gitea_secret: &str, worker_password: &str) -> String {
    SAMPLE
        .replace(
            &format!("secret = \"{SAMPLE_GITEA_SECRET}\""),
            &format!("secret = \"{gitea_secret}\""),
        )
        .replace(SAMPLE_WORKER_PASSWORD, worker_password)
}
