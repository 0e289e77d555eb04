//! The command grammar of calicoctl, one table per command, in the original's docopt style
//! (reference section 2): usage lines, a description, options with their defaults.
//!
//! Help ([`super::help`]) renders these tables and bash completion ([`super::completion`])
//! derives its word lists from the same usage lines and options, so the two cannot drift.
//! The dispatch in each command module is the executable form of the same grammar; the tests
//! in `cli/tests/calicoctl_help.rs` run every usage line's literal words through it.

/// One `--option` of a command.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// The option as written in the usage lines: `--ip`, `-o`.
    pub name: &'static str,
    /// The value placeholder (`<IP>`), empty for a flag.
    pub value: &'static str,
    /// The values completion offers, when the option takes one of a fixed set.
    pub choices: &'static [&'static str],
    /// What `[default: ...]` shows; empty when there is none.
    pub default: &'static str,
    pub help: &'static str,
}

/// The grammar of one command.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    pub name: &'static str,
    /// The one-line summary in `calicoctl help`.
    pub summary: &'static str,
    /// Usage lines without the leading `calicoctl `; a line may continue over several
    /// physical lines (indented), as the original's profile rule grammar does.
    pub usage: &'static [&'static str],
    pub description: &'static str,
    pub options: &'static [Opt],
    /// Further docopt sections (`Warnings:`, `Examples:`), verbatim; empty when none.
    pub extra: &'static str,
}

const fn flag(name: &'static str, help: &'static str) -> Opt {
    Opt {
        name,
        value: "",
        choices: &[],
        default: "",
        help,
    }
}

const fn valued(
    name: &'static str,
    value: &'static str,
    default: &'static str,
    help: &'static str,
) -> Opt {
    Opt {
        name,
        value,
        choices: &[],
        default,
        help,
    }
}

const IPV4: Opt = flag("--ipv4", "Show IPv4 information only.");
const STRICT: Opt = flag(
    "--strict",
    "Fail on the first record that cannot be read, instead of\nlisting it as BROKEN after the good ones.",
);
const IPV6: Opt = flag("--ipv6", "Show IPv6 information only.");

/// Options every command accepts, anywhere on the line.
pub const GLOBAL_OPTIONS: &[Opt] = &[
    Opt {
        name: "--datastore",
        value: "<DATASTORE>",
        choices: &["sled", "etcd"],
        default: "etcd when ETCD_ENDPOINTS or ETCD_AUTHORITY is set, else sled",
        help:
            "The datastore: sled (embedded, under CALICO_DATA_DIR) or etcd.\nAlso CALICO_DATASTORE.",
    },
    valued(
        "--hostname",
        "<HOSTNAME>",
        "HOSTNAME, else the kernel's hostname",
        "The name this host is registered under.",
    ),
    Opt {
        name: "--output",
        value: "<FORMAT>",
        choices: &["table", "json"],
        default: "table",
        help: "Output format; -o json is short for --output=json.",
    },
    flag("--help", "Show the usage of a command (also -h, anywhere)."),
];

const NODE: Command = Command {
    name: "node",
    summary: "Configure the main calico-node agent and this node's BGP peers",
    usage: &[
        "node [--ip=<IP>] [--ip6=<IP6>] [--as=<AS_NUM>] [--log-dir=<LOG_DIR>]
                 [--backend=<BACKEND>] [--runtime=<RUNTIME>] [--detach=<DETACH>]
                 [--node-image=<DOCKER_IMAGE_NAME>] [--no-pull]
                 [--libnetwork] [--libnetwork-image=<LIBNETWORK_IMAGE_NAME>]
                 [--kubernetes] [--kube-plugin-version=<KUBE_PLUGIN_VERSION>] [--rkt]",
        "node stop [--force]",
        "node remove [--hostname=<HOSTNAME>] [--remove-endpoints]",
        "node show",
        "node bgp peer add <PEER_IP> as <AS_NUM>",
        "node bgp peer remove <PEER_IP>",
        "node bgp peer show [--ipv4 | --ipv6] [--strict]",
    ],
    description: "Start the calico-node agent on this host (policy, and BGP through BIRD), register
this host and its addresses in the datastore, stop or remove the node, and
configure the BGP peers specific to this node. The node is named by the global
--hostname option (the original's --name), else HOSTNAME, else the kernel's.",
    options: &[
        valued(
            "--ip",
            "<IP>",
            "the last IPv4 address on this host",
            "The local management address to use; BGP peers reach this node on it.",
        ),
        valued(
            "--ip6",
            "<IP6>",
            "",
            "The local IPv6 management address to use.",
        ),
        valued(
            "--as",
            "<AS_NUM>",
            "the global default-node-as",
            "The AS number for this node.",
        ),
        valued(
            "--log-dir",
            "<LOG_DIR>",
            "$CALICO_DATA_DIR",
            "The directory for the agent's and BIRD's logs.",
        ),
        Opt {
            name: "--backend",
            value: "<BACKEND>",
            choices: &["bird", "none"],
            default: "bird",
            help: "bird: policy and BGP networking; none: policy only, no BIRD.",
        },
        Opt {
            name: "--runtime",
            value: "<RUNTIME>",
            choices: &["docker", "rkt", "none"],
            default: "docker",
            help:
                "none: register the node but do not start the agent; print how to\nrun it instead.",
        },
        Opt {
            name: "--detach",
            value: "<DETACH>",
            choices: &["true", "false"],
            default: "true",
            help: "false: run the agent in the foreground.",
        },
        valued(
            "--node-image",
            "<DOCKER_IMAGE_NAME>",
            "",
            "Docker image option of the original; calico-rs starts no image.",
        ),
        flag(
            "--no-pull",
            "Docker image option of the original; calico-rs pulls no image.",
        ),
        flag(
            "--libnetwork",
            "Docker libnetwork plugin option of the original; not provided here.",
        ),
        valued(
            "--libnetwork-image",
            "<LIBNETWORK_IMAGE_NAME>",
            "",
            "Docker image option of the original; calico-rs starts no image.",
        ),
        flag(
            "--kubernetes",
            "Kubernetes plugin download of the original; not provided here.",
        ),
        valued(
            "--kube-plugin-version",
            "<KUBE_PLUGIN_VERSION>",
            "",
            "Kubernetes plugin version of the original; not provided here.",
        ),
        flag(
            "--rkt",
            "rkt plugin download of the original; not provided here.",
        ),
        flag(
            "--force",
            "Stop the node even while this host has endpoints.",
        ),
        valued(
            "--hostname",
            "<HOSTNAME>",
            "this host",
            "The node whose data node remove deletes.",
        ),
        flag(
            "--remove-endpoints",
            "Remove this node's endpoints too (otherwise node remove refuses\nwhile any exist).",
        ),
        IPV4,
        IPV6,
    ],
    extra: "",
};

const STATUS: Command = Command {
    name: "status",
    summary: "Print current status information",
    usage: &["status"],
    description: "Print whether the calico-node agent runs on this host, its version, and the
state of its BGP sessions per IP family.",
    options: &[],
    extra: "",
};

const CONTAINER: Command = Command {
    name: "container",
    summary: "Configure containers and their addresses",
    usage: &[
        "container <CONTAINER> ip (add|remove) <IP> [--interface=<INTERFACE>]",
        "container <CONTAINER> endpoint show",
        "container <CONTAINER> endpoint-id show",
        "container <CONTAINER> profile (append|remove|set) [<PROFILES>...]",
        "container <CONTAINER> profile show",
        "container <CONTAINER> label add <KEY=VALUE>",
        "container <CONTAINER> label remove <KEY>",
        "container add <CONTAINER> <IP> [--interface=<INTERFACE>]",
        "container remove <CONTAINER>",
    ],
    description: "Add or remove containers to Calico networking, manage their IP addresses and
profiles. All these commands must be run on the host that contains the
container. <CONTAINER> is a Docker container name or ID, or the path of a
network namespace.",
    options: &[
        valued(
            "<IP>",
            "",
            "",
            "The IP address desired. If \"ipv4\", \"ipv6\", or a CIDR is given,
then Calico assigns an available IPv4 address, IPv6 address, or
an address from the pool with exactly that CIDR, respectively.",
        ),
        valued(
            "--interface",
            "<INTERFACE>",
            "eth1",
            "The name to give to the interface in the container.",
        ),
    ],
    extra: "",
};

const PROFILE: Command = Command {
    name: "profile",
    summary: "Configure endpoint profiles",
    usage: &[
        "profile show [--detailed] [--strict]",
        "profile add <PROFILE>",
        "profile remove <PROFILE> [--no-check]",
        "profile <PROFILE> tag show",
        "profile <PROFILE> tag (add|remove) <TAG>",
        "profile <PROFILE> rule add (inbound|outbound) [--at=<POSITION>]
    (allow|deny) [(
      (tcp|udp) [(from [(ports <SRCPORTS>)] [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
                [(to   [(ports <DSTPORTS>)] [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
      icmp [(type <ICMPTYPE> [(code <ICMPCODE>)])]
           [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
           [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
      [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
      [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])]
    )]",
        "profile <PROFILE> rule remove (inbound|outbound) (--at=<POSITION>|
    (allow|deny) [(
      (tcp|udp) [(from [(ports <SRCPORTS>)] [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
                [(to   [(ports <DSTPORTS>)] [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
      icmp [(type <ICMPTYPE> [(code <ICMPCODE>)])]
           [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
           [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
      [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
      [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])]
    )])",
        "profile <PROFILE> rule show",
        "profile <PROFILE> rule json",
        "profile <PROFILE> rule update",
    ],
    description: "Modify available profiles and configure rules or tags. rule update reads a
rules JSON object (whose \"id\" is <PROFILE>) from standard input.",
    options: &[
        flag("--detailed", "Show additional information."),
        STRICT,
        flag(
            "--no-check",
            "Remove a profile without checking if there are endpoints\nassociated with the profile.",
        ),
        valued(
            "--at",
            "<POSITION>",
            "append at end",
            "Specify the position in the chain where the rule should\nbe placed.",
        ),
    ],
    extra: "Examples:
  Add and set up a rule to prevent all inbound traffic except pings from the
  192.168/16 subnet:
  $ calicoctl profile add only-local-pings
  $ calicoctl profile only-local-pings rule add inbound deny icmp
  $ calicoctl profile only-local-pings rule add inbound --at=2 allow from cidr 192.168.0.0/16
",
};

const ENDPOINT: Command = Command {
    name: "endpoint",
    summary: "Configure the endpoints assigned to existing containers",
    usage: &[
        "endpoint show [--host=<HOSTNAME>] [--orchestrator=<ORCHESTRATOR_ID>]
                 [--workload=<WORKLOAD_ID>] [--endpoint=<ENDPOINT_ID>] [--detailed]
                 [--strict]",
        "endpoint <ENDPOINT_ID> profile (append|remove|set) [--host=<HOSTNAME>]
                 [--orchestrator=<ORCHESTRATOR_ID>] [--workload=<WORKLOAD_ID>] [<PROFILES>...]",
        "endpoint <ENDPOINT_ID> profile show [--host=<HOSTNAME>]
                 [--orchestrator=<ORCHESTRATOR_ID>] [--workload=<WORKLOAD_ID>]",
    ],
    description: "Configure and show endpoints assigned to existing containers.",
    options: &[
        flag("--detailed", "Show additional information."),
        STRICT,
        valued(
            "--host",
            "<HOSTNAME>",
            "",
            "Filters endpoints on a specific host.",
        ),
        valued(
            "--orchestrator",
            "<ORCHESTRATOR_ID>",
            "",
            "Filters endpoints created on a specific orchestrator.",
        ),
        valued(
            "--workload",
            "<WORKLOAD_ID>",
            "",
            "Filters endpoints on a specific workload.",
        ),
        valued(
            "--endpoint",
            "<ENDPOINT_ID>",
            "",
            "Filters endpoints with a specific endpoint ID.",
        ),
    ],
    extra: "Examples:
  Show all endpoints belonging to 'host1':
  $ calicoctl endpoint show --host=host1

  Add a profile called 'profile-A' to the endpoint a1b2c3d4:
  $ calicoctl endpoint a1b2c3d4 profile append profile-A
",
};

const POOL: Command = Command {
    name: "pool",
    summary: "Configure ip-pools",
    usage: &[
        "pool add <CIDRS>... [--ipip | --vxlan] [--nat-outgoing]",
        "pool remove <CIDRS>...",
        "pool range add <START_IP> <END_IP> [--ipip | --vxlan] [--nat-outgoing]",
        "pool show [--ipv4 | --ipv6] [--strict]",
    ],
    description: "Configure IP Pools: the address ranges workloads are assigned from and BGP
announces.",
    options: &[
        flag(
            "--ipip",
            "Use IP-over-IP encapsulation across hosts (IPv4 only).",
        ),
        flag(
            "--vxlan",
            "Use VXLAN encapsulation across hosts (vxlan.calico; IPv4 only; not with --ipip).",
        ),
        flag(
            "--nat-outgoing",
            "Apply NAT to traffic leaving the data center from this pool.",
        ),
        IPV4,
        IPV6,
        STRICT,
    ],
    extra: "",
};

const BGP: Command = Command {
    name: "bgp",
    summary: "Configure global BGP options",
    usage: &[
        "bgp peer add <PEER_IP> as <AS_NUM>",
        "bgp peer remove <PEER_IP>",
        "bgp peer show [--ipv4 | --ipv6] [--strict]",
        "bgp node-mesh [on|off]",
        "bgp default-node-as [<AS_NUM>]",
    ],
    description: "Configure the global BGP peers every node peers with, the node-to-node mesh,
and the AS number of nodes that have none of their own.",
    options: &[IPV4, IPV6],
    extra: "",
};

const IPAM: Command = Command {
    name: "ipam",
    summary: "Configure IP address management",
    usage: &["ipam release <IP>", "ipam info <IP>"],
    description: "Manage Calico assigned IP addresses.",
    options: &[],
    extra: "Warnings:
  -  Releasing an in-use IP address can result in it being assigned to multiple
     workloads.
",
};

const CHECKSYSTEM: Command = Command {
    name: "checksystem",
    summary: "Check for incompatibilities on the host system",
    usage: &["checksystem [--fix] [--libnetwork]"],
    description: "Check that the tools and kernel modules the calico-node agent needs are
present, loadable or built in.",
    options: &[
        flag(
            "--fix",
            "Deprecated; accepted and ignored, as in the original.",
        ),
        flag(
            "--libnetwork",
            "Accepted for compatibility with the original.",
        ),
    ],
    extra: "",
};

const CONFIG: Command = Command {
    name: "config",
    summary: "Configure low-level component configuration",
    usage: &[
        "config felix <NAME> [<VALUE>|--remove] [--force]",
        "config bgp <NAME> [<VALUE>|--remove] [--force]",
        "config node bgp <NAME> [<VALUE>|--remove] [--force]",
    ],
    description: "Configure or show low-level component configuration for Felix and BGP.
Without <VALUE> or --remove, show the configured value.",
    options: &[
        flag("--remove", "Remove the configuration entry."),
        flag(
            "--force",
            "Force update of configuration entry even if key value is unknown,\nor the value is not recognized as valid.",
        ),
    ],
    extra: "Valid configuration:
  Command         | <NAME>   | <VALUE>s
------------------+----------+-----------------------------------------
  config felix    | loglevel | none debug info warning error critical
  config bgp      | loglevel | none debug info
  config node bgp | loglevel | none debug info

Warnings:
  -  Changing the global BGP logging levels using the `calicoctl config bgp`
     command may cause all BGP sessions to bounce potentially resulting in a
     transient loss of service. If you need to change the logging level for
     BGP, it is recommended to change the levels on a per-node basis using
     the `calicoctl config node bgp` command.
",
};

const DIAGS: Command = Command {
    name: "diags",
    summary: "Save diagnostic information",
    usage: &["diags [--log-dir=<LOG_DIR>]"],
    description: "Save diagnostic information into a .tar.gz and print where it was written:
the agent's and BIRD's logs, iptables-save, ip6tables-save, ipset list, ip route,
ip -6 route, ip link, birdc show protocols all, this node's datastore records,
calicoctl status and the versions.",
    options: &[valued(
        "--log-dir",
        "<LOG_DIR>",
        "$CALICO_DATA_DIR",
        "The directory containing Calico logs.",
    )],
    extra: "",
};

const VERSION: Command = Command {
    name: "version",
    summary: "Display the version of calicoctl",
    usage: &["version"],
    description: "Display the version of calicoctl.",
    options: &[],
    extra: "",
};

const COMPLETION: Command = Command {
    name: "completion",
    summary: "Print the bash completion script for calicoctl",
    usage: &["completion bash"],
    description: "Print a bash completion script for calicoctl on standard output; source it, or
install it with scripts/install-completion.",
    options: &[],
    extra: "",
};

const FILENAME: Opt = valued(
    "--filename",
    "<FILENAME>",
    "",
    "The resource file (YAML or JSON; several documents separated by ---);\n- reads standard input. Also -f <FILENAME>.",
);
const NODE_ID: Opt = valued(
    "--node",
    "<NODE>",
    "",
    "The node of a hostEndpoint, workloadEndpoint or node-scoped bgpPeer.",
);
const RESOURCE_KINDS: &str =
    "Kinds: policy, profile, workloadEndpoint, hostEndpoint, ipPool, bgpPeer, node
(case-insensitive; plurals and the short forms pol, pro, wep, hep, ipp/pool, bgpp/bp,
no also work). Resources are calicoctl 1.x apiVersion v1 documents, stored in the v1
layout, so the other commands see the same data.";

const CREATE: Command = Command {
    name: "create",
    summary: "Create resources from a file",
    usage: &["create -f <FILENAME> [--skip-exists]"],
    description: "Create every resource in the file. Every document is checked before anything is
written, and all are written in one transaction: if one exists already or is
invalid, nothing is written.",
    options: &[
        FILENAME,
        flag(
            "--skip-exists",
            "Skip resources that exist instead of failing.",
        ),
    ],
    extra: RESOURCE_KINDS,
};

const APPLY: Command = Command {
    name: "apply",
    summary: "Create or replace resources from a file",
    usage: &["apply -f <FILENAME>"],
    description: "Create or replace every resource in the file, all or nothing.",
    options: &[FILENAME],
    extra: RESOURCE_KINDS,
};

const REPLACE: Command = Command {
    name: "replace",
    summary: "Replace existing resources from a file",
    usage: &["replace -f <FILENAME>"],
    description: "Replace every resource in the file; each must exist. All or nothing.",
    options: &[FILENAME],
    extra: RESOURCE_KINDS,
};

const DELETE: Command = Command {
    name: "delete",
    summary: "Delete resources named in a file or on the command line",
    usage: &[
        "delete -f <FILENAME>",
        "delete <KIND> <NAME> [--node=<NODE>] [--orchestrator=<ORCHESTRATOR>] [--workload=<WORKLOAD>]",
    ],
    description: "Delete the resources of a file (each must exist; all or nothing), or one
resource by kind and name. NAME is the CIDR of an ipPool and the peer IP of a
bgpPeer; a hostEndpoint needs --node, a workloadEndpoint --node, --orchestrator
and --workload.",
    options: &[
        FILENAME,
        NODE_ID,
        valued("--orchestrator", "<ORCHESTRATOR>", "", "The orchestrator of a workloadEndpoint."),
        valued("--workload", "<WORKLOAD>", "", "The workload of a workloadEndpoint."),
    ],
    extra: RESOURCE_KINDS,
};

const GET: Command = Command {
    name: "get",
    summary: "Show resources",
    usage: &["get <KIND> [<NAME>] [--node=<NODE>] [--output=<FORMAT>]"],
    description: "Show the resources of a kind (one, with NAME). -o yaml and -o json print a list
that is valid input to create, apply, replace and delete.",
    options: &[
        NODE_ID,
        Opt {
            name: "--output",
            value: "<FORMAT>",
            choices: &["ps", "wide", "yaml", "json"],
            default: "ps",
            help: "ps (a table), wide (a table with more columns), yaml or json.",
        },
    ],
    extra: RESOURCE_KINDS,
};

const WHAT_IF: Command = Command {
    name: "what-if",
    summary: "Show which flows a proposed command would allow or deny",
    usage: &[
        "what-if [--probe=<PROBE>]... [--fail-on=<KIND>] [--] <COMMAND>...",
        "what-if [--probe=<PROBE>]... [--fail-on=<KIND>] -f <FILENAME>",
    ],
    description: "Run <COMMAND> (any calicoctl command line, as this host would run it) on an
in-memory copy of the datastore in the simulator, settle the simulated cluster
before and after, and print every flow between endpoints whose verdict changes:
`source -> destination proto[/port]: allow -> deny`, with the rule or missing
route that decides it after the change, then a summary line. The datastore is
never written. Probes: ICMP echo, every port a rule names, and --probe.
Needs calico-sim next to calicoctl (or on PATH). -o json prints the report as
JSON; -o svg=<FILE> (with either) also draws the before/after matrix into <FILE>. With -f,
the proposed change is `apply -f <FILENAME>` of a resource file.",
    options: &[
        FILENAME,
        valued(
            "--probe",
            "<PROBE>",
            "",
            "Also try this probe: tcp/<port>, udp/<port>, icmp[/<type>[/<code>]].\nMay repeat.",
        ),
        Opt {
            name: "--fail-on",
            value: "<KIND>",
            choices: &["lost", "gained", "any"],
            default: "",
            help: "Exit 3 when a flow is newly denied (lost), newly allowed\n(gained), or either (any).",
        },
    ],
    extra: "Examples:
  calicoctl what-if -- profile PROF_A_B rule add inbound --at=1 deny icmp
  calicoctl what-if --fail-on=lost -- container workload_B profile remove PROF_A_B
",
};

/// Every command, in the order `calicoctl help` lists them.
pub const COMMANDS: &[Command] = &[
    STATUS,
    NODE,
    CONTAINER,
    PROFILE,
    ENDPOINT,
    POOL,
    BGP,
    IPAM,
    CHECKSYSTEM,
    CONFIG,
    DIAGS,
    VERSION,
    COMPLETION,
    CREATE,
    APPLY,
    REPLACE,
    DELETE,
    GET,
    WHAT_IF,
];

/// The command named `name`.
pub fn command(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}
