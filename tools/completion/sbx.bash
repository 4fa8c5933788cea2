# bash completion for sbx(1): subcommands, sandbox names read from the
# mount (-m MOUNT, else $SBX_MOUNT, else /mnt/sbxfs), settings of `new`,
# and after `run SANDBOX --` the command as for any command line.

# The sandboxes of mount $1: its directories (ID symlinks left out).
_sbx_sandboxes()
{
    local d
    for d in "$1"/*; do
        [[ -d $d && ! -L $d ]] && printf '%s\n' "${d##*/}"
    done
}

_sbx()
{
    local cur prev words cword
    _init_completion || return

    local mnt=${SBX_MOUNT:-/mnt/sbxfs} i=1 sub= subi=0
    # global options come before the subcommand
    while ((i < cword)); do
        case ${words[i]} in
        -m) mnt=${words[i + 1]}; ((i += 2)); continue ;;
        -*) ((i++)); continue ;;
        *) sub=${words[i]}; subi=$i; break ;;
        esac
    done

    if [[ $prev == -m ]]; then
        _filedir -d
        return
    fi
    if [[ -z $sub ]]; then
        COMPREPLY=($(compgen -W '-m run new rm ls status' -- "$cur"))
        return
    fi

    case $sub in
    run)
        # after "--": complete the command run in the sandbox
        for ((i = subi + 1; i < cword; i++)); do
            if [[ ${words[i]} == -- ]]; then
                _command_offset $((i + 1))
                return
            fi
        done
        local args=0
        for ((i = subi + 1; i < cword; i++)); do
            [[ ${words[i]} == -* ]] || ((args++))
        done
        if ((args == 0)); then
            COMPREPLY=($(compgen -W "-n $(_sbx_sandboxes "$mnt")" \
                -- "$cur"))
        else
            COMPREPLY=($(compgen -W '--' -- "$cur"))
        fi
        ;;
    rm | status)
        ((cword == subi + 1)) &&
            COMPREPLY=($(compgen -W "$(_sbx_sandboxes "$mnt")" -- "$cur"))
        ;;
    new)
        # NAME is the user's to pick; then settings of the local runtime
        if ((cword > subi + 1)); then
            case $cur in
            network=*)
                COMPREPLY=($(compgen -P network= -W 'none host' \
                    -- "${cur#network=}"))
                ;;
            *)
                compopt -o nospace
                COMPREPLY=($(compgen -W 'template= network= cpus=
                    memory= pids=' -- "$cur"))
                ;;
            esac
        fi
        ;;
    esac
} &&
    complete -F _sbx sbx
