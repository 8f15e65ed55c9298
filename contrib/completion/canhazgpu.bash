# bash completion for canhazgpu. Install as
# /usr/share/bash-completion/completions/canhazgpu, or source it.

_canhazgpu() {
	local cur prev cmd="" dash=0 i
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
	local commands="status run reserve release queue report violations web admin version help"
	local global="--config --redis-url --node --memory-threshold --gpu-provider --fake-file --help"

	# The command is the first word that is neither a flag nor a flag's value.
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--) dash=$i; break ;;
		--config | --redis-url | --node | --memory-threshold | --gpu-provider | --fake-file) ((i++)) ;;
		-*) ;;
		*) [[ -z $cmd ]] && cmd=${COMP_WORDS[i]} ;;
		esac
	done

	# After `run ... --`: the program, then its own arguments.
	if ((dash > 0)) && [[ $cmd == run ]]; then
		if ((COMP_CWORD == dash + 1)); then
			# compgen -c lists a program once per PATH directory that has
			# it, and again as an alias, function or builtin: once is enough.
			mapfile -t COMPREPLY < <(compgen -c -- "$cur" | sort -u)
		else
			mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		fi
		return
	fi

	case $prev in
	--gpu-provider) mapfile -t COMPREPLY < <(compgen -W "auto nvml fake" -- "$cur"); return ;;
	--config | --fake-file) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
	--user | -u) mapfile -t COMPREPLY < <(compgen -u -- "$cur"); return ;;
	--gpus | -g | --gpu-ids | -G | --duration | -d | --timeout | -t | --days | --note | -n | --redis-url | --node | --memory-threshold) return ;;
	esac

	if [[ -z $cmd ]]; then
		if [[ $cur == -* ]]; then
			mapfile -t COMPREPLY < <(compgen -W "$global --version" -- "$cur")
		else
			mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
		fi
		return
	fi

	local flags=""
	case $cmd in
	status) flags="--json --all-nodes --prometheus" ;;
	run) flags="--gpus --gpu-ids --wait --nonblock --note --user --timeout" ;;
	reserve) flags="--gpus --gpu-ids --wait --nonblock --note --user --duration --short --keep-alive" ;;
	release) flags="--gpu-ids --user" ;;
	queue) flags="--json" ;;
	report) flags="--days --json" ;;
	violations) flags="--days --user --all-nodes --json" ;;
	web) flags="--listen --tls-cert --tls-key --auth-file --insecure" ;;
	admin) flags="--register --gpus --force --release --gpu-ids --user --acl --check-config --forget-node" ;;
	version) flags="" ;;
	help) mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur"); return ;;
	esac
	mapfile -t COMPREPLY < <(compgen -W "$flags $global" -- "$cur")
}
complete -F _canhazgpu canhazgpu
