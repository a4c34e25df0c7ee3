package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/http/apiclient"
)

const commands = "serve bootstrap audit backup restore bench keygen nats-credentials provision healthcheck scan keys verify whoami login logout version completion"

const bashCompletion = `# keyledger completion for bash: source <(keyledger completion bash)
_keyledger() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W "` + commands + `" -- "$cur")); return
  fi
  case "$prev" in
    --org) COMPREPLY=($(compgen -W "$(keyledger __complete orgs 2>/dev/null)" -- "$cur")); return ;;
    --output) COMPREPLY=($(compgen -W "table json yaml" -- "$cur")); return ;;
    --profile) COMPREPLY=($(compgen -W "$(keyledger __complete profiles 2>/dev/null)" -- "$cur")); return ;;
  esac
  case "${COMP_WORDS[1]}" in
    keys)
      if [[ $COMP_CWORD -eq 2 ]]; then
        COMPREPLY=($(compgen -W "create list get rotate revoke history" -- "$cur")); return
      fi
      case "${COMP_WORDS[2]}" in
        get|rotate|revoke|history)
          local org=""
          for ((i = 3; i < COMP_CWORD; i++)); do
            [[ "${COMP_WORDS[i]}" == --org ]] && org="--org=${COMP_WORDS[i+1]}"
          done
          COMPREPLY=($(compgen -W "$(keyledger __complete keys $org 2>/dev/null)" -- "$cur")) ;;
      esac ;;
    completion) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")) ;;
  esac
}
complete -F _keyledger keyledger
`

const zshCompletion = `# keyledger completion for zsh: source <(keyledger completion zsh)
autoload -U +X compinit && compinit -C
autoload -U +X bashcompinit && bashcompinit
` + bashCompletion

const fishCompletion = `# keyledger completion for fish: keyledger completion fish | source
complete -c keyledger -f
complete -c keyledger -n __fish_use_subcommand -a "` + commands + `"
complete -c keyledger -n "__fish_seen_subcommand_from keys; and not __fish_seen_subcommand_from create list get rotate revoke history" -a "create list get rotate revoke history"
complete -c keyledger -n "__fish_seen_subcommand_from get rotate revoke history" -a "(keyledger __complete keys 2>/dev/null)"
complete -c keyledger -n "__fish_seen_subcommand_from completion" -a "bash zsh fish"
complete -c keyledger -l org -x -a "(keyledger __complete orgs 2>/dev/null)"
complete -c keyledger -l output -x -a "table json yaml"
complete -c keyledger -l profile -x -a "(keyledger __complete profiles 2>/dev/null)"
`

// completionCmd prints the completion script of a shell.
func completionCmd(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usageError("usage: keyledger completion bash|zsh|fish")
	}
	script, ok := map[string]string{"bash": bashCompletion, "zsh": zshCompletion, "fish": fishCompletion}[args[0]]
	if !ok {
		return usageError("completion: bash, zsh or fish")
	}
	_, err := io.WriteString(stdout, script)
	return err
}

// completeCmd answers the completion scripts: `keyledger __complete
// keys|orgs|profiles`, one word a line, from the server where it takes
// one (with the profile's or KEYLEDGER_* defaults).
func completeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("usage: keyledger __complete keys|orgs|profiles")
	}
	all, _, err := loadProfiles()
	if err != nil {
		return err
	}
	switch args[0] {
	// Only words that cannot mean anything to a shell are printed: compgen
	// -W expands what it is given, and a server (or a profiles file) could
	// say anything.
	case "profiles":
		for _, name := range sortedKeys(all.Profiles) {
			if plainWord(name) {
				fmt.Fprintln(stdout, name)
			}
		}
		return nil
	case "orgs":
		seen := map[string]bool{}
		say := func(org string) {
			if domain.ValidateOrgID(org) == nil && !seen[org] {
				seen[org] = true
				fmt.Fprintln(stdout, org)
			}
		}
		// The org of the credential in use, as the server says, then
		// those of the profiles.
		c := &remote{stdout: stdout, stderr: stderr, output: "json"}
		c.flags(newFlagSet("__complete orgs", stderr), false)
		if c.connect(false) == nil && c.token != "" {
			if res, err := c.client.WhoamiWithResponse(ctx, nil); err == nil && res.JSON200 != nil {
				say(res.JSON200.OrgId)
			}
		}
		for _, p := range all.Profiles {
			say(p.Org)
		}
		return nil
	case "keys":
		c := &remote{stdout: stdout, stderr: stderr, output: "json"}
		fs := newFlagSet("__complete keys", stderr)
		c.flags(fs, true)
		if _, err := parseInterspersed(fs, args[1:]); err != nil {
			return err
		}
		c.output = "json"
		if err := c.connect(true); err != nil {
			return err
		}
		res, err := c.client.ListKeysWithResponse(ctx, c.org, nil)
		if err != nil {
			return unreachable(err)
		}
		if err := answer(res.HTTPResponse, res.Body, nil); err != nil {
			return err
		}
		var page apiclient.KeyPage
		if err := json.Unmarshal(res.Body, &page); err != nil {
			return err
		}
		for _, k := range page.Keys {
			if domain.ValidateKeyID(k.Id) == nil {
				fmt.Fprintln(stdout, k.Id)
			}
		}
		return nil
	}
	return usageError("__complete: keys, orgs or profiles")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// plainWord: letters, digits, and . _ - only.
func plainWord(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
