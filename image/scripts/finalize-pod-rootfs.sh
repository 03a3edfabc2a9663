#!/bin/sh
# mkosi finalize script, test profile: the root file system of the VM test's pod, a directory of
# the image (the Kata runtime would hand the agent an image's layers; no image is pulled here).
# Debian's busybox-static (a hard link, no second copy) with the applets the pod uses, and the
# page its httpd serves, and a CGI program that reports what a process inside the container
# finds of podmesh's keys (pmvm-pod-isolation-check). tests/vm (pmvm-pod) runs it through the real kata-agent.
set -eu
rootfs=$BUILDROOT/usr/lib/pmvm/pod/rootfs
bb=$BUILDROOT/usr/bin/busybox
[ -x "$bb" ] || { echo "finalize-pod-rootfs: $bb missing (package busybox-static)" >&2; exit 1; }
rm -rf "$rootfs"
install -d -m 0755 "$rootfs/bin" "$rootfs/www/cgi-bin" "$rootfs/proc" "$rootfs/dev" "$rootfs/sys" "$rootfs/tmp" "$rootfs/etc"
ln "$bb" "$rootfs/bin/busybox" 2>/dev/null || cp "$bb" "$rootfs/bin/busybox"
for applet in sh httpd ls cat grep test echo id ps hostname wc awk head; do
    ln -s busybox "$rootfs/bin/$applet"
done
echo "root:x:0:0:root:/:/bin/sh" >"$rootfs/etc/passwd"
echo "root:x:0:" >"$rootfs/etc/group"
install -m 0755 "$BUILDROOT/usr/libexec/podmesh/pmvm-pod-isolation-check" "$rootfs/www/cgi-bin/isolation"
printf 'pmvm-pod httpd: busybox in a kata-agent container\n' >"$rootfs/www/index.html"
