# The rest of the chassis_control program that bmcsim writes for one
# ipmi_sim instance; the lines above set dir and vm, and
# define qemu_run, which runs the VM's QEMU with extra arguments.
#
# ipmi_sim calls it as "prog get power boot" (it prints "power:0|1" and
# "boot:pxe|default") and "prog set power 1|0", "set boot pxe|default",
# "set reset 1", "set shutdown 1". Each change appends one line to
# $dir/actions.log. It must return within about a second.
set -u

log() {
	printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" "$1" >>"$dir/actions.log"
}

# running succeeds when the VM's QEMU process exists and is not a zombie.
running() {
	[ "$vm" = 1 ] && [ -s "$dir/vm.pid" ] || return 1
	pid=$(cat "$dir/vm.pid")
	[ -r "/proc/$pid/stat" ] || return 1
	state=$(sed 's/.*) //' "/proc/$pid/stat" | cut -c1)
	[ "$state" != Z ]
}

vm_start() {
	[ "$vm" = 1 ] || return 0
	running && return 0
	rm -f "$dir/vm.pid"
	if [ "$(cat "$dir/boot")" = pxe ]; then
		set -- -boot n
	else
		set --
	fi
	qemu_run "$@" -daemonize -pidfile "$dir/vm.pid" >>"$dir/vm.log" 2>&1 </dev/null ||
		echo "$(date -u +%FT%TZ) qemu failed to start" >>"$dir/vm.log"
}

vm_stop() {
	if running; then
		pid=$(cat "$dir/vm.pid")
		kill "$pid" 2>/dev/null
		i=0
		while [ $i -lt 20 ] && running; do
			sleep 0.05
			i=$((i + 1))
		done
		running && kill -9 "$pid" 2>/dev/null
	fi
	rm -f "$dir/vm.pid"
}

power() {
	if [ "$vm" = 1 ]; then
		if running; then echo 1; else echo 0; fi
	else
		cat "$dir/power"
	fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
init)
	# Power at start, set by bmcsim: not an action of the BMC.
	vm_start
	echo 1 >"$dir/power"
	;;
get)
	for what in "$@"; do
		case $what in
		power) echo "power:$(power)" ;;
		boot) echo "boot:$(cat "$dir/boot")" ;;
		esac
	done
	;;
set)
	while [ $# -ge 2 ]; do
		case $1 in
		power)
			if [ "$2" = 1 ]; then
				log "power on"
				vm_start
				echo 1 >"$dir/power"
			else
				log "power off"
				vm_stop
				echo 0 >"$dir/power"
			fi
			;;
		reset)
			log "reset"
			if running; then
				vm_stop
				vm_start
			fi
			;;
		shutdown)
			log "shutdown"
			vm_stop
			echo 0 >"$dir/power"
			;;
		boot)
			log "boot $2"
			echo "$2" >"$dir/boot"
			;;
		esac
		shift 2
	done
	;;
esac
exit 0
