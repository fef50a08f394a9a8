{{/*
Names and labels (bitnami style). Every resource is named from these, never by hand.
*/}}

{{/* Chart name, 63 characters at most. */}}
{{- define "aether.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, or the release alone when it already contains the chart name. */}}
{{- define "aether.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* chart-version for the helm.sh/chart label. */}}
{{- define "aether.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "aether.labels" -}}
helm.sh/chart: {{ include "aether.chart" . }}
{{ include "aether.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aether
aether.dev/region: {{ .Values.region.name | quote }}
aether.dev/environment: {{ .Values.environment | quote }}
{{- end -}}

{{/* Labels that select this release's pods. */}}
{{- define "aether.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aether.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A component's full name: <fullname>-<component>. Call with (dict "root" $ "name" $name). */}}
{{- define "aether.component.fullname" -}}
{{- printf "%s-%s" (include "aether.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A component's selector labels. Call with (dict "root" $ "name" $name). */}}
{{- define "aether.component.selectorLabels" -}}
{{ include "aether.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* A component's labels. Call with (dict "root" $ "name" $name). */}}
{{- define "aether.component.labels" -}}
{{ include "aether.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/*
Deep merge that, unlike sprig's mergeOverwrite, lets false, 0 and "" override: maps merge key by
key, every other value (lists included) replaces. Mutates .dst. Call with (dict "dst" $d "src" $s).
*/}}
{{- define "aether.mergeInto" -}}
{{- $dst := .dst -}}
{{- range $key, $value := .src -}}
{{- $current := get $dst $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- include "aether.mergeInto" (dict "dst" $current "src" $value) -}}
{{- else if or (kindIs "map" $value) (kindIs "slice" $value) -}}
{{- $_ := set $dst $key (deepCopy $value) -}}
{{- else -}}
{{- $_ := set $dst $key $value -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The effective values of one component: `default` deep-merged with components.<name>.
Returns YAML; use with fromYaml. Call with (dict "root" $ "name" $name).
*/}}
{{- define "aether.component.values" -}}
{{- $merged := deepCopy .root.Values.default -}}
{{- include "aether.mergeInto" (dict "dst" $merged "src" (index .root.Values.components .name)) -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* Names of the enabled components, sorted, one per line. */}}
{{- define "aether.enabledComponents" -}}
{{- range $name := keys .Values.components | sortAlpha -}}
{{- if (index $.Values.components $name).enabled }}
{{ $name }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Image reference: [registry/]repository[:tag][@digest]. Call with the component's image map and root. */}}
{{- define "aether.image" -}}
{{- $image := .image -}}
{{- $repository := required (printf "components.%s.image.repository is required" .name) $image.repository -}}
{{- $ref := ternary (printf "%s/%s" (trimSuffix "/" $image.registry) $repository) $repository (ne $image.registry "") -}}
{{- $tag := default .root.Chart.AppVersion ($image.tag | toString) -}}
{{- if $image.digest -}}
{{- printf "%s:%s@%s" $ref $tag $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref $tag -}}
{{- end -}}
{{- end -}}

{{/* The shared ConfigMap's name. */}}
{{- define "aether.configName" -}}
{{- printf "%s-config" (include "aether.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Whether a component has a Secret to read (inline or external). Call with (dict "root" $ "c" $c). */}}
{{- define "aether.component.hasSecret" -}}
{{- if .root.Values.secrets.externalSecrets.enabled -}}
true
{{- else if and .root.Values.secrets.create .c.secretEnv -}}
true
{{- end -}}
{{- end -}}

{{/* Upper-case env-var form of a component name (ai -> AI). */}}
{{- define "aether.envName" -}}
{{- . | upper | replace "-" "_" -}}
{{- end -}}

{{/* A probe. Call with (dict "probe" $p "c" $c "name" $name "kind" "readiness"). */}}
{{- define "aether.probe" -}}
{{- $p := .probe -}}
{{- if eq $p.type "grpc" }}
{{- if not (gt (int .c.ports.grpc) 0) -}}
{{- fail (printf "components.%s.probes.%s.type is grpc but the component has no gRPC port (ports.grpc: 0); use type http" .name .kind) -}}
{{- end }}
grpc:
  port: {{ int .c.ports.grpc }}
  service: ""
{{- else }}
httpGet:
  path: {{ $p.path }}
  port: http
{{- end }}
periodSeconds: {{ int $p.periodSeconds }}
timeoutSeconds: {{ int $p.timeoutSeconds }}
failureThreshold: {{ int $p.failureThreshold }}
{{- end -}}
