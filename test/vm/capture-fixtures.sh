#!/bin/bash
# Runs INSIDE the test VM (see capture-fixtures.ts): drives a throw-away thin pool through the
# states the devicemapper parsers must understand and saves the real output of dmsetup,
# thin_delta, losetup and /proc/self/mounts as fixtures in ./fixtures (cwd = the work dir).
set -uo pipefail
F=$PWD/fixtures; S=/tmp/capture; mkdir -p "$F" $S/mnt
export DM_DISABLE_UDEV=1
out() { "${@:2}" > "$F/$1" 2>&1; echo "captured $1 (exit $?)"; }    # stdout+stderr of a command
N=--noudevsync

truncate -s 16M $S/meta.img; truncate -s 64M $S/data.img
META=$(losetup -f --show $S/meta.img); DATA=$(losetup -f --show $S/data.img)
dd if=/dev/zero of="$META" bs=4096 count=1 oflag=direct status=none
out ls-empty.txt dmsetup ls
dmsetup create $N pool --table "0 $(blockdev --getsz "$DATA") thin-pool $META $DATA 128 32 1 error_if_no_space"
out pool-status-fresh.txt dmsetup status pool
out pool-table.txt dmsetup table pool
out info-devno.txt dmsetup info -c --noheadings -o major,minor pool
dmsetup message pool 0 "create_thin 0"
out err-create-thin-exists.txt dmsetup message pool 0 "create_thin 0"
out err-delete-absent.txt dmsetup message pool 0 "delete 77"
out err-thin-table-absent-id.txt dmsetup create $N ghost --table "0 65536 thin /dev/mapper/pool 77"
dmsetup create $N thin0 --table "0 65536 thin /dev/mapper/pool 0"
out thin-status-empty.txt dmsetup status thin0
out thin-table.txt dmsetup table thin0
out err-create-name-busy.txt dmsetup create $N thin0 --table "0 65536 thin /dev/mapper/pool 0"
mkfs.ext4 -q -E lazy_itable_init=1,lazy_journal_init=1,nodiscard /dev/mapper/thin0
mount -o noinit_itable /dev/mapper/thin0 $S/mnt
head -c 4M /dev/urandom > $S/mnt/blob; sync
out thin-status-used.txt dmsetup status thin0
out pool-status-used.txt dmsetup status pool
out err-remove-busy.txt dmsetup remove $N thin0
out proc-mounts.txt cat /proc/self/mounts
out losetup-list.json losetup --list --json --output NAME,BACK-FILE
dmsetup suspend $N thin0; dmsetup message pool 0 "create_snap 1 0"; dmsetup resume $N thin0
head -c 1M /dev/urandom > $S/mnt/blob2; echo changed > $S/mnt/blob-marker; sync
out ls-devices.txt dmsetup ls
out status-all.txt dmsetup status
out table-all.txt dmsetup table
dmsetup message pool 0 reserve_metadata_snap
out err-reserve-held.txt dmsetup message pool 0 reserve_metadata_snap
out pool-status-held.txt dmsetup status pool
thin_delta -m --snap1 1 --snap2 0 "$META" > "$F/thin-delta.xml"
thin_delta -m --verbose --snap1 1 --snap2 0 "$META" > "$F/thin-delta-verbose.xml"
thin_dump -m "$META" > "$F/thin-dump.xml"
dmsetup message pool 0 release_metadata_snap
out err-release-none.txt dmsetup message pool 0 release_metadata_snap
out err-set-txid-wrong.txt dmsetup message pool 0 "set_transaction_id 5 6"
out err-status-absent.txt dmsetup status ghost
out err-remove-absent.txt dmsetup remove $N ghost
dmsetup message pool 0 "create_thin 2"
dmsetup create $N thin2 --table "0 262144 thin /dev/mapper/pool 2"
dd if=/dev/urandom of=/dev/mapper/thin2 bs=1M count=100 oflag=direct status=none 2>/dev/null
out pool-status-full.txt dmsetup status pool
umount $S/mnt; dmsetup remove $N thin0 thin2; dmsetup remove $N pool

# A queue_if_no_space pool whose metadata device starts failing writes: read-only, needs_check.
dd if=/dev/zero of="$META" bs=4096 count=1 oflag=direct status=none
MS=$(blockdev --getsz "$META")
dmsetup create $N mlin --table "0 $MS linear $META 0"
dmsetup create $N pool2 --table "0 $(blockdev --getsz "$DATA") thin-pool /dev/mapper/mlin $DATA 256 32 0"
out pool-status-queue.txt dmsetup status pool2
out pool-table-plain.txt dmsetup table pool2
dmsetup suspend $N mlin; dmsetup load mlin --table "0 $MS flakey $META 0 0 600 1 error_writes"; dmsetup resume $N mlin
dmsetup message pool2 0 "create_thin 1"
out pool-status-ro-needs-check.txt dmsetup status pool2
out err-message-read-only.txt dmsetup message pool2 0 "create_thin 2"
dmsetup remove $N pool2
# A healthy pool whose metadata device fails completely: the pool fails.
dd if=/dev/zero of="$META" bs=4096 count=1 oflag=direct status=none
dmsetup suspend $N mlin; dmsetup load mlin --table "0 $MS linear $META 0"; dmsetup resume $N mlin
dmsetup create $N pool3 --table "0 $(blockdev --getsz "$DATA") thin-pool /dev/mapper/mlin $DATA 128 32 0"
dmsetup suspend $N mlin; dmsetup load mlin --table "0 $MS error"; dmsetup resume $N mlin
dmsetup message pool3 0 "create_thin 1" >/dev/null 2>&1
out pool-status-fail.txt dmsetup status pool3
dmsetup remove $N pool3 mlin
# Device ids with the transaction id each was created under (set before each create), no mappings.
dd if=/dev/zero of="$META" bs=4096 count=1 oflag=direct status=none
dmsetup create $N pool4 --table "0 $(blockdev --getsz "$DATA") thin-pool $META $DATA 128 32 1 error_if_no_space"
dmsetup message pool4 0 "set_transaction_id 0 123456789012345"; dmsetup message pool4 0 "create_thin 4"
dmsetup message pool4 0 "set_transaction_id 123456789012345 77"; dmsetup message pool4 0 "create_snap 5 4"
dmsetup message pool4 0 "set_transaction_id 77 281474976710655"
dmsetup message pool4 0 reserve_metadata_snap
thin_dump --skip-mappings -m "$META" > "$F/thin-dump-skip-mappings.xml"
dmsetup message pool4 0 release_metadata_snap
dmsetup remove $N pool4
losetup -d "$META" "$DATA"
{ uname -r; dmsetup version; thin_delta --version; } > "$F/versions.txt" 2>&1
echo "capture done"
