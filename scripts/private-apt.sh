# Sourced by the install scripts: a private apt configuration for one suite of the machine's own
# Debian mirrors, so that nothing in /etc/apt changes and no host name is written into the repo.
#
#   private_apt NAME DIR LINE_TYPE SUITE   sets APTOPTS for `apt-get $APTOPTS ...` using DIR
#     NAME:      the calling script, for error messages
#     LINE_TYPE: deb (binary packages) or deb-src (source packages)

private_apt() {
  _name=$1 _dir=$2 _type=$3 _suite=$4
  mkdir -p "$_dir/lists/partial" "$_dir/cache/archives/partial"
  # Mirror URIs of the machine's Debian suites (deb822 .sources and one-line .list formats).
  _uris=$( (grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | sed 's/^URIs:[[:space:]]*//' | tr ' ' '\n';
            grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}') \
          | grep -v -- '-security' | grep -i debian | sort -u)
  [ -n "$_uris" ] || { echo "$_name: no Debian mirror found in /etc/apt/sources*" >&2; exit 1; }
  for u in $_uris; do echo "$_type $u $_suite main"; done > "$_dir/sources.list"
  APTOPTS="-o Dir::Etc::SourceList=$_dir/sources.list -o Dir::Etc::SourceParts=/dev/null \
 -o Dir::State::Lists=$_dir/lists -o Dir::Cache=$_dir/cache -o APT::Sandbox::User=root"
  apt-get $APTOPTS update -qq
}
