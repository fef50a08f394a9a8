{{/*
The one shared workload template. components.yaml calls each of these once per enabled
component with (dict "root" $ "name" $name "c" $effectiveValues "fullname" $fullname).
*/}}

{{- define "aether.objects.serviceaccount" -}}
{{- if .c.serviceAccount.create }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .fullname }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aether.component.labels" . | nindent 4 }}
  {{- with .c.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
{{- end -}}

{{- define "aether.objects.deployment" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $hasGrpc := gt (int $c.ports.grpc) 0 -}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "aether.component.labels" . | nindent 4 }}
spec:
  {{- if not $c.autoscaling.enabled }}
  replicas: {{ int $c.replicas }}
  {{- end }}
  revisionHistoryLimit: {{ int $c.revisionHistoryLimit }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {{ $c.rollingUpdate.maxSurge }}
      maxUnavailable: {{ $c.rollingUpdate.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "aether.component.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "aether.component.labels" . | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        kubectl.kubernetes.io/default-container: {{ .name }}
        # Roll the pods when their configuration changes.
        checksum/config: {{ include "aether.configmap" $root | sha256sum }}
        {{- if and $root.Values.secrets.create $c.secretEnv }}
        checksum/secret: {{ tpl (toYaml $c.secretEnv) $root | sha256sum }}
        {{- end }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ ternary .fullname "default" $c.serviceAccount.create }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $c.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with $c.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $c.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ int $c.terminationGracePeriodSeconds }}
      {{- if $c.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: {{ int $c.topologySpread.maxSkew }}
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: {{ $c.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "aether.component.selectorLabels" . | nindent 14 }}
          matchLabelKeys: [pod-template-hash]
        - maxSkew: {{ int $c.topologySpread.maxSkew }}
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: {{ $c.topologySpread.nodeWhenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "aether.component.selectorLabels" . | nindent 14 }}
          matchLabelKeys: [pod-template-hash]
      {{- end }}
      {{- if ne $c.podAntiAffinity "none" }}
      affinity:
        podAntiAffinity:
          {{- if eq $c.podAntiAffinity "hard" }}
          requiredDuringSchedulingIgnoredDuringExecution:
            - topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  {{- include "aether.component.selectorLabels" . | nindent 18 }}
          {{- else }}
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "aether.component.selectorLabels" . | nindent 20 }}
          {{- end }}
      {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "aether.image" (dict "image" $c.image "root" $root "name" .name) | quote }}
          imagePullPolicy: {{ $c.image.pullPolicy }}
          command:
            {{- toYaml (default (list "python" "-m" (printf "aether_%s" (.name | replace "-" "_"))) $c.command) | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ int $c.ports.http }}
              protocol: TCP
            {{- if $hasGrpc }}
            - name: grpc
              containerPort: {{ int $c.ports.grpc }}
              protocol: TCP
            {{- end }}
          env:
            - name: AETHER_HTTP_HOST
              value: "0.0.0.0"
            - name: AETHER_HTTP_PORT
              value: {{ $c.ports.http | int | quote }}
            {{- if $hasGrpc }}
            - name: AETHER_GRPC_PORT
              value: {{ $c.ports.grpc | int | quote }}
            {{- end }}
            - name: AETHER_LOG_LEVEL
              value: {{ $c.logLevel | quote }}
            - name: OTEL_SERVICE_NAME
              value: {{ printf "aether-%s" .name | quote }}
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: {{ printf "service.namespace=aether,deployment.environment=%s,cloud.region=%s,k8s.pod.name=$(POD_NAME)" $root.Values.environment (default $root.Values.region.name $root.Values.region.cloudRegion) | quote }}
            {{- range $key, $value := $c.env }}
            - name: {{ $key }}
              value: {{ tpl (toString $value) $root | quote }}
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "aether.configName" $root }}
            {{- if include "aether.component.hasSecret" (dict "root" $root "c" $c) }}
            - secretRef:
                name: {{ .fullname }}
            {{- end }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          {{- if $c.probes.startup.enabled }}
          startupProbe:
            {{- include "aether.probe" (dict "probe" $c.probes.startup "c" $c "name" .name "kind" "startup") | nindent 12 }}
          {{- end }}
          {{- if $c.probes.readiness.enabled }}
          readinessProbe:
            {{- include "aether.probe" (dict "probe" $c.probes.readiness "c" $c "name" .name "kind" "readiness") | nindent 12 }}
          {{- end }}
          {{- if $c.probes.liveness.enabled }}
          livenessProbe:
            {{- include "aether.probe" (dict "probe" $c.probes.liveness "c" $c "name" .name "kind" "liveness") | nindent 12 }}
          {{- end }}
          {{- if gt (int $c.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ int $c.preStopSleepSeconds }}
          {{- end }}
          securityContext:
            {{- toYaml $c.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $c.tmpSizeLimit }}
{{- end -}}

{{- define "aether.objects.service" -}}
{{- $c := .c -}}
{{- $hasGrpc := gt (int $c.ports.grpc) 0 -}}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .fullname }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aether.component.labels" . | nindent 4 }}
spec:
  type: {{ $c.service.type }}
  selector:
    {{- include "aether.component.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ int $c.ports.http }}
      targetPort: http
      protocol: TCP
      appProtocol: http
    {{- if $hasGrpc }}
    - name: grpc
      port: {{ int $c.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: kubernetes.io/h2c
    {{- end }}
{{- if and $hasGrpc $c.service.headless }}
---
# Resolves to every ready pod, so gRPC clients (round_robin) spread calls over all of them.
apiVersion: v1
kind: Service
metadata:
  name: {{ printf "%s-headless" .fullname | trunc 63 | trimSuffix "-" }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aether.component.labels" . | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "aether.component.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ int $c.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: kubernetes.io/h2c
{{- end }}
{{- end -}}

{{- define "aether.objects.hpa" -}}
{{- $a := .c.autoscaling -}}
{{- if $a.enabled }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "components.%s.autoscaling: minReplicas (%d) is above maxReplicas (%d)" .name (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .fullname }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aether.component.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .fullname }}
  minReplicas: {{ int $a.minReplicas }}
  maxReplicas: {{ int $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ int $a.targetCPUUtilizationPercentage }}
    {{- if gt (int $a.targetMemoryUtilizationPercentage) 0 }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ int $a.targetMemoryUtilizationPercentage }}
    {{- end }}
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 0
      policies:
        - type: Percent
          value: 100
          periodSeconds: 60
    scaleDown:
      stabilizationWindowSeconds: {{ int $a.scaleDownStabilizationSeconds }}
      policies:
        - type: Percent
          value: 25
          periodSeconds: 60
{{- end }}
{{- end -}}

{{- define "aether.objects.pdb" -}}
{{- $c := .c -}}
{{- if $c.pdb.enabled }}
{{- $floor := ternary (int $c.autoscaling.minReplicas) (int $c.replicas) $c.autoscaling.enabled -}}
{{- if and (not (kindIs "string" $c.pdb.minAvailable)) (ge (int $c.pdb.minAvailable) $floor) -}}
{{- fail (printf "components.%s.pdb.minAvailable (%d) must be below the replica floor (%d), or no node could ever be drained" .name (int $c.pdb.minAvailable) $floor) -}}
{{- end }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .fullname }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aether.component.labels" . | nindent 4 }}
spec:
  minAvailable: {{ kindIs "string" $c.pdb.minAvailable | ternary ($c.pdb.minAvailable | quote) (int $c.pdb.minAvailable) }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "aether.component.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "aether.objects.networkpolicy" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $np := $c.networkPolicy -}}
{{- $hasGrpc := gt (int $c.ports.grpc) 0 -}}
{{- if $np.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ .fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "aether.component.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "aether.component.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    # The other Aether components (gRPC calls, HTTP between services).
    - from:
        - podSelector:
            matchLabels:
              {{- include "aether.selectorLabels" $root | nindent 14 }}
      ports:
        - port: http
          protocol: TCP
        {{- if $hasGrpc }}
        - port: grpc
          protocol: TCP
        {{- end }}
    # Prometheus scraping /metrics.
    - from:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ $np.monitoringNamespace }}
      ports:
        - port: http
          protocol: TCP
    {{- if and $root.Values.ingress.enabled (eq $root.Values.ingress.component .name) }}
    # The public entry: the ingress controller (and, for an ALB in IP mode, the VPC).
    - from:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ $root.Values.ingress.controllerNamespace }}
        {{- range $root.Values.ingress.allowFromCIDRs }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
      ports:
        - port: http
          protocol: TCP
    {{- end }}
    {{- with $np.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  egress:
    # DNS.
    - to:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: kube-system
          podSelector:
            matchLabels:
              k8s-app: kube-dns
      ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    # This release's pods: other components and in-cluster datastores.
    - to:
        - podSelector:
            matchLabels:
              app.kubernetes.io/instance: {{ $root.Release.Name }}
    {{- with $np.egressCIDRs }}
    # Managed datastores and collectors (the VPC's private subnets).
    - to:
        {{- range . }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
    {{- end }}
    {{- with $np.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end -}}

{{- define "aether.objects.servicemonitor" -}}
{{- $root := .root -}}
{{- $sm := .c.serviceMonitor -}}
{{- if $sm.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ .fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "aether.component.labels" . | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- include "aether.component.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ $root.Release.Namespace }}
  endpoints:
    - port: http
      path: /metrics
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
      relabelings:
        # The metrics carry no service label (libs/common/metrics.py): the component name
        # becomes `service`, and the region is added for cross-region views.
        - sourceLabels: [__meta_kubernetes_service_label_app_kubernetes_io_component]
          targetLabel: service
          action: replace
        - targetLabel: region
          replacement: {{ $root.Values.region.name | quote }}
          action: replace
{{- end }}
{{- end -}}
