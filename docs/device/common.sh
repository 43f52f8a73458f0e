# Sourced by pack.sh and pack-paper.sh (here, not on the GPU machine): the packing steps the two
# share, so that what the GPU machine's data.sh and env.sh undo stays the same for both.

# exclude_and_reset DIR…: each DIR emptied and kept out of git (.git/info/exclude).
exclude_and_reset() {
  for d in "$@"; do
    grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
    rm -rf "$d" && mkdir -p "$d"
  done
}

# pack_binary NAME PATH DEST: the binary at PATH, stripped, as DEST/NAME.xz (env.sh's `unpack`
# puts it in /root/bin/NAME).
pack_binary() {
  strip -o "/tmp/$1" "$2"
  xz -T0 -6 -c "/tmp/$1" > "$3/$1.xz"
}

# pack_cifar CIFAR_DIR FILE DEST: a CIFAR-10 binary file as DEST/FILE.xz, with xz's delta filter
# (a third smaller on these images than plain xz).
pack_cifar() {
  xz -T0 -c --delta=dist=1 --lzma2=preset=9 "$1/$2" > "$3/$2.xz"
}
