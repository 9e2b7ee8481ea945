"""Launch the ros2_infmllm node and drive it to active.

``ros2 launch ros2_infmllm node.launch.py [name:=value ...]``.

Arguments: params_file, namespace, model, image_topics, dds_profile, autostart, respawn.
The node itself is described once, as plain data, in ``ros2_infmllm.ros.launch.node_spec``
(shared with ``python -m ros2_infmllm.ros.launch``, the runner for machines without ROS 2
launch).
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessStart
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition
from ros2_infmllm.ros.launch import LAUNCH_ARGUMENTS, node_spec


def _node_actions(context: LaunchContext) -> list:
    """Build the LifecycleNode from the shared spec, plus configure/activate events."""
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    spec = node_spec(**values)
    parameters = ([spec.params_file] if spec.params_file else []) + (
        [spec.parameters] if spec.parameters else [])
    node = LifecycleNode(
        package=spec.package,
        executable=spec.executable,
        name=spec.name,
        namespace=spec.namespace,
        parameters=parameters,
        remappings=spec.remappings,
        additional_env=spec.env,
        respawn=spec.respawn,
        output='screen',
    )
    actions = [node]
    if spec.autostart:
        activate = RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
            entities=[EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(node),
                transition_id=Transition.TRANSITION_ACTIVATE))]))
        # on every process start (respawns too): configure; reaching inactive: activate
        configure = RegisterEventHandler(OnProcessStart(
            target_action=node,
            on_start=[EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(node),
                transition_id=Transition.TRANSITION_CONFIGURE))]))
        actions += [activate, configure]
    return actions


def generate_launch_description() -> LaunchDescription:
    """Declare the launch arguments and the node (see ros2_infmllm.ros.launch)."""
    arguments = [DeclareLaunchArgument(name, default_value=default, description=text)
                 for name, (default, text) in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node_actions)])
